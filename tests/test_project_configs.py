"""A config under projects/<Name>/ loads in any rein_d2 tool: load_config imports the project's
packages (registering its datasets and backbones) and adds their config keys, as the project's
own train_net.py does; a config elsewhere imports no project."""
import json
import os
import subprocess
import sys

from conftest import REPO
from rein_d2.utils.projects import project_of

_CHILD = """
import json, sys
from detectron2.data import DatasetCatalog
from rein_d2 import load_config
out = {}
for path in sys.argv[1:]:
    cfg = load_config(path)
    out[path] = {"arch": cfg.MODEL.META_ARCHITECTURE, "test": list(cfg.DATASETS.TEST),
                 "registered": [d for d in cfg.DATASETS.TEST if d in DatasetCatalog.list()],
                 "reindet_keys": "REINDET" in cfg.MODEL and "LSJ" in cfg.INPUT,
                 "projects": sorted(m for m in ("rein_det", "rein_panoptic") if m in sys.modules)}
print(json.dumps(out))
"""


def _load_in_fresh_process(*configs):
    """load_config in a new interpreter, whose path holds no project (unlike pytest's)."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, *configs], capture_output=True, text=True,
                          cwd=REPO, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_project_of_finds_the_innermost_projects_folder():
    assert project_of(os.path.join(REPO, "projects/ReinDet/configs/cityscapes/x.yaml")) == \
        os.path.join(REPO, "projects/ReinDet")
    assert project_of(os.path.join(REPO, "configs/gtav/rein_dinov2_l.yaml")) is None


def test_project_configs_register_their_datasets_and_keys():
    core = "configs/gtav/rein_dinov2_s.yaml"
    det = "projects/ReinDet/configs/cityscapes/mask_rcnn_rein_dinov2_l.yaml"
    pan = "projects/ReinPanoptic/configs/cityscapes/panoptic_rein_dinov2_l.yaml"
    out = _load_in_fresh_process(core, det, pan)
    assert out[core]["projects"] == []  # nothing imported for a core config
    assert out[det]["arch"] == "GeneralizedRCNN" and out[det]["reindet_keys"]
    assert out[det]["test"] and out[det]["registered"] == out[det]["test"]
    assert "foggy_cityscapes_0.02_instance_val" in out[det]["test"]
    assert out[pan]["test"] and out[pan]["registered"] == out[pan]["test"]
    assert out[pan]["projects"] == ["rein_det", "rein_panoptic"]


def test_a_sibling_project_that_cannot_import_is_skipped_with_a_warning(tmp_path, caplog, monkeypatch):
    from rein_d2.utils.projects import import_project_of

    monkeypatch.setattr(sys, "path", list(sys.path))  # the projects' folders leave with the test
    own = tmp_path / "projects" / "Own" / "own_pkg_4c1e"
    own.mkdir(parents=True)
    (own / "__init__.py").write_text("__all__ = ['add_own_config']\ndef add_own_config(cfg):\n    pass\n")
    other = tmp_path / "projects" / "Other" / "other_pkg_4c1e"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("import a_module_that_is_not_installed_4c1e\n")
    adds = import_project_of(str(tmp_path / "projects" / "Own" / "configs" / "x.yaml"))
    assert [f.__name__ for f in adds] == ["add_own_config"]
    assert "projects/Other not imported" in caplog.text and "a_module_that_is_not_installed_4c1e" in caplog.text
