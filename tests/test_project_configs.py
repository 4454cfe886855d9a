"""A config of one of rein_d2's projects loads in any rein_d2 tool: load_config imports the
project's installed package (registering its datasets and backbones) and adds its config keys,
as the project's own train_net.py does; a config elsewhere imports no project, and nothing
beside a config file is ever imported. `pip install -e .` makes the projects' packages
importable from any folder."""
import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig

import pytest

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
import rein_panoptic, rein_det  # (a core config imports neither)
out["files"] = [rein_panoptic.__file__, rein_det.__file__]
# the programs behind the projects' command lines, and rein_d2's
import rein_det.tools.train_net, rein_panoptic.tools.train_net, rein_panoptic.data.prepare.cityscapes
import rein_d2.tools.train_net, rein_d2.data.prepare.cityscapes
out["programs"] = [m.main.__module__ for m in (rein_det.tools.train_net, rein_panoptic.tools.train_net,
                   rein_panoptic.data.prepare.cityscapes, rein_d2.tools.train_net, rein_d2.data.prepare.cityscapes)]
print(json.dumps(out))
"""


def _environment_install():
    """Where this environment's rein_d2 distribution is installed from (None: not installed)."""
    try:
        return str(importlib.metadata.distribution("rein_d2")._path)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def site_packages(tmp_path_factory):
    """This checkout installed as the Makefile installs it (pip install --no-deps -e .), into a
    prefix of its own: the site-packages folder to add (the shared environment is untouched)."""
    prefix = tmp_path_factory.mktemp("prefix")
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "PYTHONPATH")}
    before = _environment_install()
    # --ignore-installed: without it pip first uninstalls the environment's own rein_d2
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--ignore-installed", "--prefix", str(prefix), "-e", REPO], cwd=str(prefix),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _environment_install() == before, "installing into a prefix changed the environment's rein_d2"
    return sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})


def _run_installed(site_packages, code, *args, cwd):
    """``code`` in a new interpreter whose path holds no project folder, with the install of
    ``site_packages`` (its .pth files processed, as in any environment)."""
    prelude = f"import site; site.addsitedir({site_packages!r})\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_project_of_names_only_known_projects():
    assert project_of(os.path.join(REPO, "projects/ReinDet/configs/cityscapes/x.yaml")) == "ReinDet"
    assert project_of("/elsewhere/projects/ReinPanoptic/configs/x.yaml") == "ReinPanoptic"
    assert project_of(os.path.join(REPO, "configs/gtav/rein_dinov2_l.yaml")) is None
    assert project_of("/tmp/projects/Unknown/configs/x.yaml") is None


def test_project_configs_register_their_datasets_and_keys(site_packages, tmp_path):
    """In a folder outside the repository, after the install: a core config imports no project,
    each project's config its package (and its sibling's), and both packages import."""
    core, det, pan = (os.path.join(REPO, p) for p in (
        "configs/gtav/rein_dinov2_s.yaml", "projects/ReinDet/configs/cityscapes/mask_rcnn_rein_dinov2_l.yaml",
        "projects/ReinPanoptic/configs/cityscapes/panoptic_rein_dinov2_l.yaml"))
    out = json.loads(_run_installed(site_packages, _CHILD, core, det, pan, cwd=str(tmp_path)))
    assert out[core]["projects"] == []  # nothing imported for a core config
    assert out[det]["arch"] == "GeneralizedRCNN" and out[det]["reindet_keys"]
    assert out[det]["test"] and out[det]["registered"] == out[det]["test"]
    assert "foggy_cityscapes_0.02_instance_val" in out[det]["test"]
    assert out[pan]["test"] and out[pan]["registered"] == out[pan]["test"]
    assert out[pan]["projects"] == ["rein_det", "rein_panoptic"]
    assert out["files"] == [os.path.join(REPO, "projects", "ReinPanoptic", "rein_panoptic", "__init__.py"),
                            os.path.join(REPO, "projects", "ReinDet", "rein_det", "__init__.py")]
    assert out["programs"] == ["rein_det.tools.train_net", "rein_panoptic.tools.train_net",
                               "rein_panoptic.data.prepare.cityscapes", "rein_d2.tools.train_net",
                               "rein_d2.data.prepare.cityscapes"]


def test_a_sibling_project_that_cannot_import_is_skipped_with_a_warning(tmp_path, caplog, monkeypatch):
    from rein_d2.utils import projects

    own = tmp_path / "own_pkg_4c1e"
    own.mkdir()
    (own / "__init__.py").write_text("__all__ = ['add_own_config']\ndef add_own_config(cfg):\n    pass\n")
    other = tmp_path / "other_pkg_4c1e"
    other.mkdir()
    (other / "__init__.py").write_text("import a_module_that_is_not_installed_4c1e\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as if installed
    monkeypatch.setattr(projects, "PROJECTS", {"Own": "own_pkg_4c1e", "Other": "other_pkg_4c1e"})
    adds = projects.import_project_of(str(tmp_path / "projects" / "Own" / "configs" / "x.yaml"))
    assert [f.__name__ for f in adds] == ["add_own_config"]
    assert "projects/Other (other_pkg_4c1e) not imported" in caplog.text
    assert "a_module_that_is_not_installed_4c1e" in caplog.text


def test_nothing_beside_a_config_is_imported(tmp_path, monkeypatch):
    """A config under an unknown projects/<Name>/ folder, or under a known project's name in
    another place, with packages beside it (one named as the known project's): none of them
    runs (the sentinel never appears); the known project's installed package is imported."""
    from rein_d2 import load_config
    from rein_d2.utils import projects

    installed = tmp_path / "site-packages" / "known_pkg_9d2f"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text(
        "__all__ = ['add_known_config']\ndef add_known_config(cfg):\n    cfg.KNOWN = True\n")
    monkeypatch.syspath_prepend(str(installed.parent))
    monkeypatch.setattr(projects, "PROJECTS", {"Known": "known_pkg_9d2f"})
    sentinel = tmp_path / "sentinel"
    for project in ("Evil", "Known"):
        root = tmp_path / project / "projects" / project
        for package in ("evil_pkg_9d2f", "known_pkg_9d2f"):
            (root / package).mkdir(parents=True)
            (root / package / "__init__.py").write_text(
                f"open({str(sentinel)!r}, 'a').write('imported')\n"
                "__all__ = ['add_evil_config']\ndef add_evil_config(cfg):\n    cfg.EVIL = True\n")
        (root / "configs").mkdir()
        config = root / "configs" / "x.yaml"
        config.write_text(f"_BASE_: {os.path.join(REPO, 'configs', 'rein_dinov2.yaml')!r}\n")
        cfg = load_config(str(config))
        assert "EVIL" not in cfg and ("KNOWN" in cfg) == (project == "Known")
    assert not sentinel.exists()
