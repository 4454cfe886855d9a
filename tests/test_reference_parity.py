"""Numerical parity with the reference implementation (../shared/fixtures/reference).

Everything goes through rein_d2's user-facing paths: a config of the fixture's miniature sizes
(as a user would write it), the official DINOv2 file through tools/convert_pretrained.py, the
released Rein and head weights as one release-format checkpoint through
tools/convert_rein_checkpoint.py, and the model from detectron2's build_model loaded by
DetectionCheckpointer. Backbone features, linked queries, every layer's class and mask logits,
the semantic logits, the losses and the Hungarian assignments must match within 1e-4.
"""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from rein_d2 import add_rein_config
from rein_d2.modeling.head import semantic_logits
from rein_d2.tools import convert_pretrained, convert_rein_checkpoint
from conftest import REPO

TOL = 1e-4
LEVELS = ["res2", "res3", "res4", "res5"]


def _load(fixtures_dir, name):
    return torch.load(os.path.join(fixtures_dir, name), map_location="cpu", weights_only=True)


def miniature_yaml(path, c):
    """The fixtures' miniature backbone (backbone_io config) and head (fixture README)."""
    path.write_text(f"""_BASE_: "{os.path.join(REPO, 'configs', 'rein_dinov2.yaml')}"
MODEL:
  VIT: {{SIZE: small, EMBED_DIM: {c['embed_dim']}, DEPTH: {c['depth']}, NUM_HEADS: {c['num_heads']},
        IMG_SIZE: {c['img_size']}, PATCH_SIZE: {c['patch_size']}, OUT_INDICES: {c['out_indices']}}}
  REIN: {{TOKEN_LENGTH: {c['token_length']}, LORA_DIM: {c['lora_rank']}, QUERY_DIM: {c['query_dims']}}}
  MASK2FORMER: {{HIDDEN_DIM: 32, NUM_QUERIES: 10, NHEADS: 4, DEC_LAYERS: 3, DIM_FEEDFORWARD: 128,
                ENC_LAYERS: 2, ENC_DIM_FEEDFORWARD: 64, ENC_POINTS: 4, TRAIN_NUM_POINTS: 256}}
  SEM_SEG_HEAD: {{NUM_CLASSES: 5}}
  DEVICE: cpu
""")
    return str(path)


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return {"backbone": _load(fixtures_dir, "backbone_io.pth"), "head": _load(fixtures_dir, "head_io.pth")}


@pytest.fixture(scope="module")
def model(fixtures_dir, reference, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    yaml = miniature_yaml(tmp / "mini.yaml", reference["backbone"]["config"])
    vfm, full, release = (str(tmp / n) for n in ("vfm.pth", "rein_d2.pth", "release.pth"))
    assert convert_pretrained.main([
        "--config-file", yaml, "--input",
        os.path.join(fixtures_dir, "backbone_dinov2_official_p14.pth"), "--output", vfm]) == 0
    # One release-format checkpoint, as the reference saves it: Rein and head together.
    state = dict(_load(fixtures_dir, "backbone_rein_release.pth")["state_dict"])
    state.update(_load(fixtures_dir, "head_state.pth"))
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, release)
    assert convert_rein_checkpoint.main([
        "--config-file", yaml, "--input", release, "--pretrained", vfm, "--output", full]) == 0

    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(yaml)
    net = build_model(cfg)
    DetectionCheckpointer(net).load(full)
    saved = torch.load(full, weights_only=True)["model"]
    loaded = net.state_dict()
    assert set(saved) == set(loaded), "every model weight comes from the two files"
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    return net.eval()


def maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ---- backbone -------------------------------------------------------------------------------

def test_features_and_queries_match_reference(model, reference):
    ref = reference["backbone"]
    with torch.no_grad():
        out = model.backbone(ref["x"])
        queries = model.backbone.linked_queries()
    for name, r in zip(LEVELS, ref["feats"]):
        assert maxdiff(out[name], r) <= TOL, name
    assert maxdiff(queries, ref["queries"]) <= TOL


def test_scale_zero_gives_plain_features(model, reference):
    ref = reference["backbone"]
    rein = model.backbone.rein
    with torch.no_grad():
        saved = rein.scale.clone()
        rein.scale.zero_()
        try:
            out = model.backbone(ref["x"])
        finally:
            rein.scale.copy_(saved)
    for name, r in zip(LEVELS, ref["plain_feats"]):
        assert maxdiff(out[name], r) <= TOL, name


# ---- head -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head_outputs(model, reference):
    io_ = reference["head"]
    stages = {}
    with torch.no_grad():
        mask_features, memories = model.pixel_decoder(io_["feats"])
        cls, masks = model.predictor(mask_features, memories, io_["query"], stages=stages)
        seg = semantic_logits(cls[-1], masks[-1], (64, 64))
    stages.update(mask_features=mask_features, multi_scale_memorys=memories)
    return cls, masks, seg, stages


def test_class_and_mask_logits_of_every_layer(head_outputs, reference):
    io_ = reference["head"]
    cls, masks, _, _ = head_outputs
    assert len(cls) == len(io_["cls_preds"]) == 4
    for i, (a, b) in enumerate(zip(cls, io_["cls_preds"])):
        assert maxdiff(a, b) <= TOL, f"class logits of prediction {i}"
    for i, (a, b) in enumerate(zip(masks, io_["mask_preds"])):
        assert maxdiff(a, b) <= TOL, f"mask logits of prediction {i}"


def test_semantic_logits(head_outputs, reference):
    assert maxdiff(head_outputs[2], reference["head"]["seg_logits"]) <= TOL


def test_intermediate_stages(head_outputs, reference):
    ref = reference["head"]["stages"]
    stages = head_outputs[3]
    assert maxdiff(stages["mask_features"], ref["mask_features"]) <= TOL
    for a, b in zip(stages["multi_scale_memorys"], ref["multi_scale_memorys"]):
        assert maxdiff(a, b) <= TOL
    assert maxdiff(stages["query_feat0"], ref["query_feat0"]) <= TOL
    for a, b in zip(stages["decoder_layer_outputs"], ref["decoder_layer_outputs"]):
        assert maxdiff(a, b) <= TOL
    assert len(stages["attn_masks"]) == len(ref["attn_masks"])
    for a, b in zip(stages["attn_masks"], ref["attn_masks"]):
        assert torch.equal(a[0], b)
    # The miniature's first masks block everything: the reset rule is exercised.
    assert stages["attn_masks"][0].all()


def test_inference_path_makes_the_same_last_prediction(model, reference):
    """all_layers=False (what inference runs) skips the intermediate full-resolution masks; its
    attention masks and last prediction are those of the full path."""
    io_ = reference["head"]
    full, last = {}, {}
    with torch.no_grad():
        mask_features, memories = model.pixel_decoder(io_["feats"])
        cls_all, masks_all = model.predictor(mask_features, memories, io_["query"], stages=full)
        cls, masks = model.predictor(mask_features, memories, io_["query"], stages=last,
                                     all_layers=False)
    assert len(cls) == len(masks) == 1
    assert maxdiff(cls[0], cls_all[-1]) <= 1e-6 and maxdiff(masks[0], masks_all[-1]) <= 1e-6
    assert len(last["attn_masks"]) == len(full["attn_masks"])
    for a, b in zip(last["attn_masks"], full["attn_masks"]):
        assert torch.equal(a, b)


def test_losses_and_assignment_with_recorded_points(model, reference):
    """Every loss term and the Hungarian assignment of every prediction, through the model's
    own criterion (built from the config), with the reference's recorded point coordinates
    injected: importance sampling picks among near ties, so re-drawn points would differ."""
    io_ = reference["head"]
    rec = io_["loss"]
    seg = rec["gt_sem_seg"][0]
    targets = [{"labels": rec["gt_labels"], "masks": torch.stack([seg == c for c in rec["gt_labels"]])}]
    criterion = model.criterion
    match_points = iter(rec["match_point_coords"])
    loss_points = iter(rec["loss_point_coords"])
    criterion.match_points = lambda device: next(match_points)[0]
    criterion.loss_points = lambda logits: next(loss_points)
    try:
        losses = criterion(io_["cls_preds"], io_["mask_preds"], targets)
    finally:
        del criterion.match_points, criterion.loss_points
    assert set(losses) == set(rec["losses"])
    for k, v in rec["losses"].items():
        assert abs(losses[k].item() - v.item()) <= TOL, k
    assert len(criterion.last_matches) == len(rec["assigned_gt_inds"]) == 3 + 1
    for (qi, gi), ref in zip([m[0] for m in criterion.last_matches], rec["assigned_gt_inds"]):
        assigned = torch.zeros_like(ref)
        assigned[qi] = gi + 1  # 1-based, 0 = unmatched, as the reference records it
        assert torch.equal(assigned, ref)
