"""tools/export_checkpoint.py: a light training checkpoint + the VFM become one full file that
loads alone, and a full file gives back the light one; exports that would carry random weights
are refused."""
import os

import torch

from rein_d2.engine import LightCheckpointer, frozen_keys, light_state_dict
from rein_d2.tools import export_checkpoint
from conftest import config_path
from test_meta_arch import MINI, mini_model


def export(*args):
    return export_checkpoint.main(["--config-file", config_path("rein_dinov2.yaml"), *args, *map(str, MINI)])


def trained_files(tmp_path):
    """A VFM file as convert_pretrained.py writes it, and a light training checkpoint."""
    model = mini_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # distinguishable from a fresh build
    frozen = set(frozen_keys(model))
    state = model.state_dict()
    torch.save({"model": {k: state[k] for k in frozen}}, tmp_path / "vfm.pth")
    LightCheckpointer(model, str(tmp_path)).save("model_final")
    return model, tmp_path / "vfm.pth", tmp_path / "model_final.pth"


def test_full_export_loads_alone_and_light_extraction_round_trips(tmp_path):
    model, vfm, light = trained_files(tmp_path)
    full = tmp_path / "full.pth"
    assert export("--output", str(full), "MODEL.WEIGHTS", str(vfm), "MODEL.TRAINED_WEIGHTS", str(light)) == 0
    saved = torch.load(full, weights_only=True)
    assert not saved["rein_d2_light"] and set(saved["model"]) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(saved["model"][k], v), k
    # The full file alone is a complete MODEL.WEIGHTS.
    fresh = mini_model()
    from rein_d2.engine import load_model_weights
    from rein_d2 import load_config
    load_model_weights(load_config(config_path("rein_dinov2.yaml"), MINI + ["MODEL.WEIGHTS", str(full)]), fresh)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())

    extracted = tmp_path / "light.pth"
    assert export("--light", "--output", str(extracted), "MODEL.WEIGHTS", str(full)) == 0
    small = torch.load(extracted, weights_only=True)
    assert small["rein_d2_light"] and set(small["model"]) == set(light_state_dict(model))
    assert not set(small["model"]) & set(frozen_keys(model))
    assert all(torch.equal(small["model"][k], v) for k, v in light_state_dict(model).items())
    assert "optimizer" not in small and os.path.getsize(extracted) < os.path.getsize(full)
    assert not list(tmp_path.glob("*.tmp"))


def test_exports_that_would_hold_random_weights_are_refused(tmp_path, capsys):
    _, vfm, light = trained_files(tmp_path)
    out = tmp_path / "out.pth"
    assert export("--output", str(out), "MODEL.TRAINED_WEIGHTS", str(light)) == 2  # no VFM
    assert "the frozen VFM: set MODEL.WEIGHTS" in capsys.readouterr().err
    assert export("--output", str(out), "MODEL.WEIGHTS", str(vfm)) == 2  # no trained part
    err = capsys.readouterr().err
    assert "MODEL.TRAINED_WEIGHTS" in err and "backbone.rein." in err
    assert not out.exists()
