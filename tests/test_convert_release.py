"""tools/convert_rein_checkpoint.py on release-format checkpoints the tests write with the
reference's key names and shapes (../shared/fixtures/reference/head_keys.txt and the release
Rein state dict's names), random values, and deliberate faults."""
import os

import pytest
import torch

from test_reference_parity import _load, miniature_yaml
from rein_d2.tools import convert_pretrained, convert_rein_checkpoint


def reference_names(fixtures_dir):
    """{release key: shape} for Rein (from the release file's names) and the head (key list)."""
    names = {k: tuple(v.shape) for k, v in
             _load(fixtures_dir, "backbone_rein_release.pth")["state_dict"].items()}
    with open(os.path.join(fixtures_dir, "head_keys.txt")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            key, shape, _ = line.rstrip("\n").split("\t")
            names[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return names


@pytest.fixture
def setup(fixtures_dir, tmp_path):
    cfg = _load(fixtures_dir, "backbone_io.pth")["config"]
    yaml = miniature_yaml(tmp_path / "mini.yaml", cfg)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in reference_names(fixtures_dir).items()}
    return yaml, state, tmp_path


def run(yaml, state, tmp_path, *extra, wrap=True):
    src, dst = str(tmp_path / "release.pth"), str(tmp_path / "out.pth")
    torch.save({"meta": {"iter": 40000}, "state_dict": state} if wrap else state, src)
    rc = convert_rein_checkpoint.main(["--config-file", yaml, "--input", src, "--output", dst, *extra])
    return rc, dst


def test_every_reference_key_lands_where_it_belongs(setup):
    yaml, state, tmp = setup
    assert len(state) == 11 + 120  # Rein and the whole head
    rc, dst = run(yaml, state, tmp)
    assert rc == 0
    out = torch.load(dst, weights_only=True)["model"]
    assert len(out) == len(state)
    for key, value in state.items():
        if key.startswith("backbone.reins."):
            new = "backbone.rein." + key[len("backbone.reins."):]
        elif key.startswith("decode_head.pixel_decoder."):
            new = "pixel_decoder." + key[len("decode_head.pixel_decoder."):]
        else:
            new = "predictor." + key[len("decode_head."):]
        assert torch.equal(out[new], value), key


def test_a_bare_state_dict_is_accepted_too(setup):
    yaml, state, tmp = setup
    assert run(yaml, state, tmp, wrap=False)[0] == 0


def test_vfm_weights_inside_the_release_are_converted(setup, fixtures_dir, capsys):
    yaml, state, tmp = setup
    official = _load(fixtures_dir, "backbone_dinov2_official_p14.pth")
    state.update({"backbone." + k: v for k, v in official.items()})
    rc, dst = run(yaml, state, tmp)
    assert rc == 0
    out = torch.load(dst, weights_only=True)["model"]
    assert "VFM keys the backbone does not use: backbone.mask_token, backbone.norm.weight" \
        in capsys.readouterr().out
    # The same tensors as the VFM converter writes from the official file alone.
    vfm = str(tmp / "vfm.pth")
    assert convert_pretrained.main([
        "--config-file", yaml, "--input", os.path.join(fixtures_dir, "backbone_dinov2_official_p14.pth"),
        "--output", vfm]) == 0
    for k, v in torch.load(vfm, weights_only=True)["model"].items():
        assert torch.equal(out[k], v), k
    # ...so adding --pretrained as well is refused rather than silently preferring one.
    rc, _ = run(yaml, state, tmp, "--pretrained", vfm)
    assert rc == 2


@pytest.mark.parametrize("fault,message", [
    ("extra_head_key", "decode_head.extra_proj.weight -> predictor.extra_proj.weight: not in this model"),
    ("foreign_prefix", "auxiliary_head.conv_seg.weight: no rein_d2 module takes this prefix"),
    ("wrong_shape", "decode_head.cls_embed.weight -> predictor.cls_embed.weight: shape (7, 32)"),
    ("missing_key", "lacks 1 trainable weights of the model: backbone.reins.transform.weight"),
    ("foreign_vfm", "the VFM under backbone.*: unrecognised checkpoint: expected the official key"),
])
def test_faults_are_errors_naming_the_key(setup, capsys, fault, message):
    yaml, state, tmp = setup
    if fault == "extra_head_key":
        state["decode_head.extra_proj.weight"] = torch.zeros(3)
    elif fault == "foreign_prefix":
        state["auxiliary_head.conv_seg.weight"] = torch.zeros(3)
    elif fault == "wrong_shape":
        state["decode_head.cls_embed.weight"] = torch.zeros(7, 32)
    elif fault == "missing_key":
        del state["backbone.reins.transform.weight"]
    else:
        # A VFM of another design under backbone.*: the official converter's refusal.
        state.update({"backbone.blocks.0.attn.qkv.weight": torch.zeros(96, 32)})
    rc, dst = run(yaml, state, tmp)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(dst)  # nothing half-written


def test_a_release_holding_rein_only_is_refused_naming_the_heads_release_keys(setup, capsys):
    yaml, state, tmp = setup
    rein_only = {k: v for k, v in state.items() if k.startswith("backbone.reins.")}
    rc, dst = run(yaml, rein_only, tmp)
    err = capsys.readouterr().err
    assert rc == 2 and not os.path.exists(dst)
    assert len(err.strip().splitlines()) == 1, err
    assert "holds no decode head, only backbone.reins." in err
    assert "needs the head's 120 decode_head.* weights (decode_head." in err
    assert "pixel_decoder." not in err.replace("decode_head.pixel_decoder.", "")  # no rein_d2 names
    assert "predictor." not in err
    assert "Convert the release checkpoint that holds Rein and the head together" in err


def test_config_that_does_not_match_the_checkpoint(setup, capsys):
    yaml, state, tmp = setup
    rc, _ = run(yaml, state, tmp, "MODEL.REIN.LINK_TOKEN_TO_QUERY", "False")
    err = capsys.readouterr().err
    assert rc == 2
    assert "predictor.querys2feat.weight: not in this model" in err
    assert "MODEL.REIN.LINK_TOKEN_TO_QUERY" in err
    assert "decode_head.query_feat.weight" in err  # what the unlinked model would need, by release name


def test_missing_or_unreadable_input(setup, capsys, tmp_path):
    yaml, _, _ = setup
    assert convert_rein_checkpoint.main(["--config-file", yaml, "--input", str(tmp_path / "nope.pth"),
                                         "--output", str(tmp_path / "o.pth")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    bad = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], bad)
    assert convert_rein_checkpoint.main(["--config-file", yaml, "--input", str(bad),
                                         "--output", str(tmp_path / "o.pth")]) == 2
    assert "expected a dict checkpoint" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    assert convert_rein_checkpoint.main(["--config-file", yaml, "--input", str(corrupt),
                                         "--output", str(tmp_path / "o.pth")]) == 2
    assert "corrupt.pth: a file of unknown kind (it starts with b'not a ch'), not a checkpoint" in capsys.readouterr().err
