"""ImageNet CNN checkpoints -> weights for a ReinCNN backbone (its timm network).

Accepted layouts:
- ResNet-50/101 V1c: the reference release's starting weights (mmcv / mmseg ``ResNetV1c``: a
  deep stem as ``stem.{0,3,6}`` convolutions and ``stem.{1,4,7}`` batch norms), the mmcls
  layout (``stem.{0,1,2}.conv`` / ``.bn``, usually under ``backbone.``), and timm's
  (``conv1.{0,3,6}``, ``conv1.{1,4}``, ``bn1``). Below the stem all three share timm's names.
- ConvNeXt: the official release (``convnext_large_22k_224.pth``: ``downsample_layers``,
  ``stages.i.j.dwconv`` ...) and timm's, both through timm's own ConvNeXt filter.
Classifier heads are dropped and reported; every weight of the network must come from the file.
"""
from typing import Dict

import torch

from .pretrained import CheckpointMismatchError, ConversionReport, _abbrev

__all__ = ["convert_cnn_checkpoint"]

# timm deep stem: conv1.0 conv, conv1.1 bn, conv1.3 conv, conv1.4 bn, conv1.6 conv, bn1.
_MMSEG_STEM = {"stem.0.": "conv1.0.", "stem.1.": "conv1.1.", "stem.3.": "conv1.3.",
               "stem.4.": "conv1.4.", "stem.6.": "conv1.6.", "stem.7.": "bn1."}
_MMCLS_STEM = {"stem.0.conv.": "conv1.0.", "stem.0.bn.": "conv1.1.", "stem.1.conv.": "conv1.3.",
               "stem.1.bn.": "conv1.4.", "stem.2.conv.": "conv1.6.", "stem.2.bn.": "bn1."}
_HEADS = ("fc.", "head.", "neck.")


def _strip_backbone_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmcls / mmseg files keep the network under ``backbone.`` beside ``head.``."""
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    return state


def _rename_resnet(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if "conv1.0.weight" in state:
        return dict(state)  # timm
    stem = _MMCLS_STEM if "stem.0.conv.weight" in state else _MMSEG_STEM if "stem.0.weight" in state else None
    if stem is None:
        raise CheckpointMismatchError(
            "not a ResNet V1c checkpoint: expected a deep stem as stem.0.weight (mmseg / mmcv "
            "ResNetV1c), stem.0.conv.weight (mmcls) or conv1.0.weight (timm); a plain ResNet "
            f"(one 7x7 conv1) is another design. First keys: {list(state)[:6]}")
    out = {}
    for k, v in state.items():
        new = next((to + k[len(src):] for src, to in stem.items() if k.startswith(src)), k)
        out[new] = v
    return out


def convert_cnn_checkpoint(state: Dict[str, torch.Tensor], backbone):
    """Convert an ImageNet checkpoint for ``backbone.vit`` (a ReinCNN's timm network).

    Returns (state dict for ``backbone.vit``, ConversionReport); raises CheckpointMismatchError
    for another design, depth or width, naming what differs."""
    state = _strip_backbone_prefix(dict(state))
    if backbone.family == "resnet":
        renamed = _rename_resnet(state)
    else:
        from timm.models.convnext import checkpoint_filter_fn
        if "downsample_layers.0.0.weight" not in state and "stem.0.weight" not in state:
            raise CheckpointMismatchError(
                "not a ConvNeXt checkpoint: expected downsample_layers.0.0.weight (the official "
                f"release) or stem.0.weight (timm). First keys: {list(state)[:6]}")
        renamed = checkpoint_filter_fn(state, backbone.vit)
    target = backbone.vit.state_dict()
    report = ConversionReport()
    out = {}
    for k, v in renamed.items():
        if k not in target:
            continue
        if v.shape != target[k].shape:
            raise CheckpointMismatchError(
                f"{k}: shape {tuple(v.shape)} in the checkpoint, {tuple(target[k].shape)} in the "
                f"backbone {backbone.arch.timm_name}: a network of another width; set "
                f"MODEL.CNN.SIZE to the checkpoint's model")
        out[k] = v.float() if v.is_floating_point() else v
        report.converted.append(k)
    extra = sorted(k for k in renamed if k not in target and not k.startswith(_HEADS))
    if extra:
        raise CheckpointMismatchError(
            f"the checkpoint has {len(extra)} weights the backbone has no place for "
            f"({_abbrev(extra)}): a deeper network or another design than "
            f"{backbone.arch.timm_name} (blocks per stage {backbone.stage_depths}); set "
            f"MODEL.CNN.SIZE to the checkpoint's model")
    for k in target:  # batch norm's step counter is bookkeeping, not a weight: 0 if absent
        if k not in out and k.endswith("num_batches_tracked"):
            out[k] = torch.zeros_like(target[k], device="cpu")
    report.missing = [k for k in target if k not in out]
    if report.missing:
        raise CheckpointMismatchError(
            f"the checkpoint lacks {len(report.missing)} weights of {backbone.arch.timm_name} "
            f"({_abbrev(report.missing)}): a shallower network or another design; set "
            f"MODEL.CNN.SIZE to the checkpoint's model")
    used = set(report.converted)
    report.dropped = sorted(k for k in renamed if k not in used)
    return out, report

