"""Turning per-query class and mask logits into per-pixel outputs."""
import torch
import torch.nn.functional as F


def semantic_logits(cls_logits: torch.Tensor, mask_logits: torch.Tensor, size) -> torch.Tensor:
    """[B, K, H, W] class scores: sum over queries of softmax(class)[:-1] x sigmoid(mask),
    masks upsampled bilinearly (align_corners=False) to ``size`` first (REIN_SPEC section 4)."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    probs = F.softmax(cls_logits, dim=-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid())
