"""Head parity with the reference ReinMask2FormerHead (../shared/fixtures/reference/head_*).

Released head weights load into rein_d2's pixel decoder and query decoder by a prefix change;
every prediction's class and mask logits, the semantic logits and the intermediate stages must
match the reference within 1e-4.
"""
import os

import pytest
import torch

from rein_d2.modeling.head import MSDeformAttnPixelDecoder, QueryDecoder, semantic_logits

TOL = 1e-4
PIXEL = "decode_head.pixel_decoder."


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    load = lambda n: torch.load(os.path.join(fixtures_dir, n), map_location="cpu", weights_only=True)
    return load("head_io.pth"), load("head_state.pth")


@pytest.fixture(scope="module")
def outputs(reference):
    io_, state = reference
    pixel = MSDeformAttnPixelDecoder(in_channels=[64] * 4, strides=[4, 8, 16, 32], feat_channels=32,
                                     out_channels=32, num_layers=2, num_heads=4, num_points=4,
                                     ffn_dim=64)
    queries = QueryDecoder(num_classes=5, dim=32, num_queries=10, num_heads=4, num_layers=3,
                           ffn_dim=128)
    pixel.load_state_dict({k[len(PIXEL):]: v for k, v in state.items() if k.startswith(PIXEL)})
    queries.load_state_dict({k[len("decode_head."):]: v for k, v in state.items()
                             if not k.startswith(PIXEL)})
    stages = {}
    with torch.no_grad():
        mask_features, memories = pixel(io_["feats"])
        cls, masks = queries(mask_features, memories, io_["query"], stages=stages)
        seg = semantic_logits(cls[-1], masks[-1], (64, 64))
    stages.update(mask_features=mask_features, multi_scale_memorys=memories)
    return cls, masks, seg, stages


def maxdiff(a, b):
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


def test_class_and_mask_logits_of_every_layer(outputs, reference):
    io_, _ = reference
    cls, masks, _, _ = outputs
    assert len(cls) == len(io_["cls_preds"]) == 4
    for i, (a, b) in enumerate(zip(cls, io_["cls_preds"])):
        assert maxdiff(a, b) <= TOL, f"class logits of prediction {i}"
    for i, (a, b) in enumerate(zip(masks, io_["mask_preds"])):
        assert maxdiff(a, b) <= TOL, f"mask logits of prediction {i}"


def test_semantic_logits(outputs, reference):
    assert maxdiff(outputs[2], reference[0]["seg_logits"]) <= TOL


def test_intermediate_stages(outputs, reference):
    ref = reference[0]["stages"]
    stages = outputs[3]
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


def test_losses_and_assignment_with_recorded_points(reference):
    """Every loss term and the Hungarian assignment of every prediction, with the reference's
    recorded point coordinates injected (importance sampling picks among near ties)."""
    from rein_d2.modeling.head import SetCriterion

    io_, _ = reference
    rec = io_["loss"]
    seg = rec["gt_sem_seg"][0]
    targets = [{"labels": rec["gt_labels"], "masks": torch.stack([seg == c for c in rec["gt_labels"]])}]
    criterion = SetCriterion(num_classes=5, num_points=256)
    match_points = iter(rec["match_point_coords"])
    loss_points = iter(rec["loss_point_coords"])
    criterion.match_points = lambda device: next(match_points)[0]
    criterion.loss_points = lambda logits: next(loss_points)
    losses = criterion(io_["cls_preds"], io_["mask_preds"], targets)
    assert set(losses) == set(rec["losses"])
    for k, v in rec["losses"].items():
        assert abs(losses[k].item() - v.item()) <= TOL, k
    for (qi, gi), ref in zip([m[0] for m in criterion.last_matches], rec["assigned_gt_inds"]):
        assigned = torch.zeros_like(ref)
        assigned[qi] = gi + 1  # 1-based, 0 = unmatched, as the reference records it
        assert torch.equal(assigned, ref)
