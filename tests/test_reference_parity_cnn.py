"""Numerical parity with the reference's CNN and DINOv3 backbones + Rein
(../shared/fixtures/reference/cnn and dinov3; their README).

The fixtures store no weights: the reference's own recipe (make_weights.py, imported from the
fixtures folder) writes each official file in its exact layout (mmseg ResNetV1c, the official
ConvNeXt-22k release and its mmpretrain layout, Meta's DINOv3 with bfloat16 rope periods) and
each Rein release ({"meta", "state_dict": backbone.reins.*}); the digests prove the files are
the reference's, bit for bit. They go through rein_d2's user paths: the official file through
tools/convert_pretrained.py, the release through the release mapping, the backbone from the
fixture's config + overrides via build_backbone. Features res2..res5 and the linked queries
must match the reference within 1e-4 at 64x64 and 64x96, and so must the plain backbone
(every Rein scale 0).
"""
import importlib.util
import os

import pytest
import torch
from detectron2.modeling import build_backbone
from torch import nn

from conftest import REPO
from rein_d2 import load_config
from rein_d2.checkpoint import (convert_official_checkpoint, convert_release_checkpoint,
                                unwrap_release_checkpoint)
from rein_d2.tools import convert_pretrained

TOL = 1e-4
LEVELS = ["res2", "res3", "res4", "res5"]
SIZES = ["64x64", "64x96"]
CASES = {"resnet": "cnn/resnet50_mini_io.pth", "convnext": "cnn/convnext_large_mini_io.pth",
         "dinov3": "dinov3/dinov3_mini_io.pth"}


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def make_weights(fixtures_dir):
    return _module(os.path.join(fixtures_dir, "make_weights.py"), "make_weights")


class _Holder(nn.Module):
    """The release mapping places backbone.* keys of a model: here one holding the backbone
    alone (the fixtures' releases carry Rein, not a head)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _write(mw, folder, keys_name, io, digest_name, path):
    """The recipe's file for ``keys_name``, checked against the fixture's digest."""
    state = mw.write_file(os.path.join(folder, keys_name), io["config"]["seed"], str(path))
    assert mw.state_digest(state) == io["config"]["digests"][digest_name], keys_name
    return state


def build(io, vfm_file, release_file):
    """convert_pretrained.py on the official file, the release mapping on the release, the
    backbone of the fixture's config; every backbone weight comes from the two files. The
    official and converted files are removed afterwards (pytest keeps its last temporary
    folders: 0.4 GB for ConvNeXt-L)."""
    c = io["config"]["rein_d2"]
    config, overrides = os.path.join(REPO, c["config_file"]), list(c["overrides"])
    out = os.path.join(os.path.dirname(vfm_file), "converted.pth")
    assert convert_pretrained.main(["--config-file", config, "--input", vfm_file, "--output", out, *overrides]) == 0
    holder = _Holder(build_backbone(load_config(config, overrides)))
    state, extra = unwrap_release_checkpoint(torch.load(release_file, weights_only=True))
    rein, _ = convert_release_checkpoint(state, holder, extra)
    weights = dict(rein)
    weights.update(torch.load(out, weights_only=True)["model"])
    missing, unexpected = holder.load_state_dict(weights, strict=True)
    assert not missing and not unexpected
    for path in (vfm_file, out):
        os.remove(path)
    return holder.backbone.eval()


@pytest.fixture(scope="session", params=list(CASES))
def case(request, fixtures_dir, make_weights, tmp_path_factory):
    """(name, io, backbone, vfm state) per fixture; the 279 MB ConvNeXt file once a session."""
    name = request.param
    io = torch.load(os.path.join(fixtures_dir, CASES[name]), weights_only=True)
    folder = os.path.join(fixtures_dir, os.path.dirname(CASES[name]))
    keys = io["config"]["keys_files"]
    tmp = tmp_path_factory.mktemp(name)
    vfm = _write(make_weights, folder, keys["vfm"], io, "vfm", tmp / "vfm.pth")
    _write(make_weights, folder, keys["release"], io, "release", tmp / "release.pth")
    backbone = build(io, str(tmp / "vfm.pth"), str(tmp / "release.pth"))
    return name, io, backbone, vfm, tmp


def maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def features(backbone, x, scale=None):
    reins = [backbone.rein] if hasattr(backbone, "rein") else list(backbone.reins)
    saved = [r.scale.detach().clone() for r in reins]
    try:
        with torch.no_grad():
            if scale is not None:
                for r in reins:
                    r.scale.fill_(scale)
            return backbone(x)
    finally:
        with torch.no_grad():
            for r, s in zip(reins, saved):
                r.scale.copy_(s)


@pytest.mark.parametrize("size", SIZES)
def test_features_and_queries_match_reference(case, size):
    name, io, backbone, _, _ = case
    ref = io["inputs"][size]
    out = features(backbone, ref["x"])
    diffs = [maxdiff(out[level], r) for level, r in zip(LEVELS, ref["feats"])]
    with torch.no_grad():
        queries = maxdiff(backbone.linked_queries(), io["queries"])
    print(f"{name} {size}: max |rein_d2 - reference| res2..res5 "
          f"{', '.join(f'{d:.1e}' for d in diffs)}; queries {queries:.1e}")
    assert max(diffs) <= TOL and queries <= TOL, (name, size, diffs, queries)


def test_rein_scale_zero_gives_the_plain_backbone(case):
    name, io, backbone, _, _ = case
    ref = io["inputs"]["64x96"]
    out = features(backbone, ref["x"], scale=0.0)
    diffs = [maxdiff(out[level], r) for level, r in zip(LEVELS, ref["plain_feats"])]
    print(f"{name} 64x96, Rein scale 0: max |rein_d2 - reference| res2..res5 "
          f"{', '.join(f'{d:.1e}' for d in diffs)}")
    assert max(diffs) <= TOL, (name, diffs)


def test_the_converter_names_what_it_drops_and_adds_as_the_file_does(case):
    name, io, backbone, vfm, _ = case
    converted, report = convert_official_checkpoint(dict(vfm), backbone)
    dropped = {"resnet": ["fc.weight", "fc.bias"], "convnext": ["head.weight", "head.bias"],
               "dinov3": ["mask_token"] + [k for k in vfm if k.endswith(".bias_mask")] + [
                   "norm.weight", "norm.bias"]}[name]
    assert sorted(report.dropped) == sorted(dropped)
    assert report.missing == []
    # ConvNeXt's stage norms 0-2 are in no ImageNet file: weight 1, bias 0 (frozen), as the
    # reference leaves them; the final norm is the file's.
    added = [f"stage_norms.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert sorted(report.initialised) == (sorted(added) if name == "convnext" else [])
    if name == "convnext":
        assert torch.equal(converted["head.norm.weight"], vfm["norm.weight"])
        assert not any(p.requires_grad for p in backbone.vit.stage_norms.parameters())


@pytest.mark.parametrize("case", ["convnext"], indirect=True)
def test_convnext_in_the_mmpretrain_layout_converts_to_the_same_weights(case, make_weights,
                                                                        fixtures_dir):
    """The same numbers as mmpretrain / mmcls store them (what mmseg's ConvNeXt configs load):
    backbone.* with depthwise_conv / pointwise_conv names, norm3, head.fc."""
    _, io, backbone, vfm, _ = case
    entries, _ = make_weights.read_keys(
        os.path.join(fixtures_dir, "cnn", io["config"]["keys_files"]["mmpretrain_keys"]))
    mmp = {k: vfm[draw] for k, _, _, draw in entries}  # draw= names the official key
    assert make_weights.state_digest(mmp) == io["config"]["digests"]["mmpretrain"]
    official, _ = convert_official_checkpoint(dict(vfm), backbone)
    converted, report = convert_official_checkpoint(mmp, backbone)
    assert set(converted) == set(official)
    assert all(torch.equal(converted[k], official[k]) for k in official)
    assert sorted(report.dropped) == ["head.fc.bias", "head.fc.weight"]


@pytest.mark.parametrize("case", ["dinov3"], indirect=True)
def test_dinov3_uses_the_periods_its_file_stores(case, make_weights, fixtures_dir):
    """Meta's files store the rope periods in bfloat16 and Meta's model uses them; the same
    file with float32 periods gives the reference's other outputs (they differ by ~7e-4)."""
    _, io, backbone, vfm, tmp = case
    assert vfm["rope_embed.periods"].dtype == torch.bfloat16
    assert torch.equal(backbone.vit.rope.periods, vfm["rope_embed.periods"].float())
    assert backbone.vit.rope.periods.tolist() == io["config"]["rope_periods_stored"]
    folder = os.path.join(fixtures_dir, "dinov3")
    keys = io["config"]["keys_files"]
    _write(make_weights, folder, keys["vfm_f32periods"], io, "vfm_f32periods", tmp / "vfm_f32.pth")
    f32 = build(io, str(tmp / "vfm_f32.pth"), str(tmp / "release.pth"))
    # float32 periods are timm's own (what dropping the stored ones, as timm's filter does, gives)
    assert f32.vit.rope.periods.tolist() == io["config"]["rope_periods_float32"]
    assert torch.equal(f32.vit.rope.periods, f32.vit.rope._compute_periods())
    for size in SIZES:
        ref = io["inputs"][size]
        out = features(f32, ref["x"])
        for level, r in zip(LEVELS, ref["feats_f32periods"]):
            assert maxdiff(out[level], r) <= TOL, (size, level)
        # ... which the reference (stored periods) tells apart at this tolerance
        off = [maxdiff(out[level], r) for level, r in zip(LEVELS, ref["feats"])]
        print(f"dinov3 {size}, float32 periods instead of the file's: max |diff| to the reference "
              f"res2..res5 {', '.join(f'{d:.1e}' for d in off)}")
        assert max(off) > 2 * TOL
