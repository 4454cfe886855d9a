"""Backbone parity with the reference implementation (../shared/fixtures/reference).

The official-format DINOv2 file goes through tools/convert_pretrained.py, the released Rein
weights load by a prefix change only, and the backbone is built from a config of the
miniature's sizes; features and queries must match the reference within 1e-4.
"""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from rein_d2 import add_rein_config
from conftest import REPO

TOL = 1e-4


def _load(fixtures_dir, name):
    return torch.load(os.path.join(fixtures_dir, name), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return _load(fixtures_dir, "backbone_io.pth")


def miniature_cfg(tmp_path, c):
    """A config of the fixture's miniature sizes, as a user would write it."""
    yaml = tmp_path / "mini.yaml"
    yaml.write_text(f"""_BASE_: "{os.path.join(REPO, 'configs', 'rein_dinov2.yaml')}"
MODEL:
  VIT: {{SIZE: small, EMBED_DIM: {c['embed_dim']}, DEPTH: {c['depth']}, NUM_HEADS: {c['num_heads']},
        IMG_SIZE: {c['img_size']}, PATCH_SIZE: {c['patch_size']}, OUT_INDICES: {c['out_indices']}}}
  REIN: {{TOKEN_LENGTH: {c['token_length']}, LORA_DIM: {c['lora_rank']}, QUERY_DIM: {c['query_dims']}}}
""")
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(str(yaml))
    return cfg, str(yaml)


@pytest.fixture(scope="module")
def backbone(fixtures_dir, reference, tmp_path_factory):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "convert_pretrained", os.path.join(REPO, "tools", "convert_pretrained.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    tmp = tmp_path_factory.mktemp("ref")
    cfg, yaml = miniature_cfg(tmp, reference["config"])
    weights = str(tmp / "vfm.pth")
    rc = tool.main(["--config-file", yaml, "--input",
                    os.path.join(fixtures_dir, "backbone_dinov2_official_p14.pth"),
                    "--output", weights])
    assert rc == 0
    model = build_backbone(cfg)
    # The VFM through the converted file, as MODEL.WEIGHTS would load it.
    wrapper = torch.nn.Module()
    wrapper.backbone = model
    DetectionCheckpointer(wrapper).load(weights)
    saved = torch.load(weights, weights_only=True)["model"]
    loaded = wrapper.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert {k for k in loaded if k.startswith("backbone.vit.")} == set(saved)
    # Released Rein weights: "backbone.reins." -> "rein." only.
    release = _load(fixtures_dir, "backbone_rein_release.pth")["state_dict"]
    model.rein.load_state_dict({k.replace("backbone.reins.", ""): v for k, v in release.items()})
    return model.eval()


def test_features_and_queries_match_reference(backbone, reference):
    with torch.no_grad():
        out = backbone(reference["x"])
        queries = backbone.linked_queries()
    for name, ref in zip(["res2", "res3", "res4", "res5"], reference["feats"]):
        assert out[name].shape == ref.shape
        assert (out[name] - ref).abs().max().item() <= TOL, name
    assert (queries - reference["queries"]).abs().max().item() <= TOL


def test_scale_zero_gives_plain_features(backbone, reference):
    with torch.no_grad():
        saved = backbone.rein.scale.clone()
        backbone.rein.scale.zero_()
        try:
            out = backbone(reference["x"])
        finally:
            backbone.rein.scale.copy_(saved)
    for name, ref in zip(["res2", "res3", "res4", "res5"], reference["plain_feats"]):
        assert (out[name] - ref).abs().max().item() <= TOL, name
