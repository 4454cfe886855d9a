"""Turning per-query class and mask logits into per-pixel outputs: semantic scores,
instances and a panoptic segmentation (Mask2Former's post-processing)."""
from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances


def semantic_logits(cls_logits: torch.Tensor, mask_logits: torch.Tensor, size) -> torch.Tensor:
    """[B, K, H, W] class scores: sum over queries of softmax(class)[:-1] x sigmoid(mask),
    masks upsampled bilinearly (align_corners=False) to ``size`` first (docs/method.md section 4)."""
    # in place: the upsampled logits are the largest tensor of inference (interpolate's
    # backward does not need its output, so this is autograd-safe)
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid_()
    probs = F.softmax(cls_logits, dim=-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, masks)


def instance_inference(cls_logits: torch.Tensor, mask_logits: torch.Tensor, num_classes: int,
                       topk: int, thing_ids: Optional[Iterable[int]] = None) -> Instances:
    """One image's detections from cls [Q, K+1] and mask logits [Q, H, W] (at output size).

    The top-k of all Q x K (query, class) scores are kept, so a query may yield several
    classes; with ``thing_ids`` (panoptic datasets) the stuff ones are then dropped. A
    detection's score is its class score times the mean foreground probability inside its
    binary mask, which ranks well-localised masks higher.
    """
    if cls_logits.shape[-1] != num_classes + 1:
        raise ValueError(f"class logits have {cls_logits.shape[-1]} entries, expected "
                         f"num_classes + 1 = {num_classes + 1}")
    scores = F.softmax(cls_logits, dim=-1)[:, :-1].flatten()
    scores, idx = scores.topk(min(topk, scores.numel()))
    query, classes = idx // num_classes, idx % num_classes
    if thing_ids is not None:
        things = torch.as_tensor(list(thing_ids), dtype=classes.dtype, device=classes.device)
        keep = torch.isin(classes, things)
        scores, query, classes = scores[keep], query[keep], classes[keep]
    logits = mask_logits[query]
    masks = logits > 0
    quality = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    result = Instances(tuple(mask_logits.shape[-2:]))
    result.pred_masks = masks
    result.pred_boxes = BitMasks(masks).get_bounding_boxes().to(masks.device)
    result.scores = scores * quality
    result.pred_classes = classes
    return result


def panoptic_inference(cls_logits: torch.Tensor, mask_logits: torch.Tensor, num_classes: int,
                       object_mask_threshold: float, overlap_threshold: float,
                       thing_ids: Iterable[int]) -> Tuple[torch.Tensor, List[dict]]:
    """One image's panoptic segmentation from cls [Q, K+1] and mask logits [Q, H, W].

    Queries predicting no-object or scoring at most ``object_mask_threshold`` are dropped;
    each pixel goes to the query with the highest score x mask probability. A segment that
    keeps less than ``overlap_threshold`` of its own (probability >= 0.5) area is dropped, and
    the segments of one stuff class share an id. Returns (ids [H, W] int32 with 0 = void,
    segments_info [{"id", "isthing", "category_id"}]) as detectron2's COCOPanopticEvaluator reads.
    """
    scores, classes = F.softmax(cls_logits, dim=-1).max(-1)
    keep = (classes != num_classes) & (scores > object_mask_threshold)
    scores, classes, probs = scores[keep], classes[keep], mask_logits[keep].sigmoid()
    seg = torch.zeros(mask_logits.shape[-2:], dtype=torch.int32, device=mask_logits.device)
    segments: List[dict] = []
    if len(classes) == 0:
        return seg, segments
    owner = (scores[:, None, None] * probs).argmax(0)
    things = {int(t) for t in thing_ids}
    stuff_ids = {}
    for k, c in enumerate(classes.tolist()):
        own = probs[k] >= 0.5
        claimed = owner == k
        area, own_area = claimed.sum().item(), own.sum().item()
        mask = claimed & own
        if own_area == 0 or not mask.any() or area / own_area < overlap_threshold:
            continue
        isthing = c in things
        if not isthing and c in stuff_ids:
            seg[mask] = stuff_ids[c]
            continue
        segments.append({"id": len(segments) + 1, "isthing": isthing, "category_id": c})
        seg[mask] = len(segments)
        if not isthing:
            stuff_ids[c] = len(segments)
    return seg, segments
