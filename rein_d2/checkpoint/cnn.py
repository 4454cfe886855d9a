"""ImageNet CNN checkpoints -> weights for a ReinCNN backbone (its timm network).

Accepted layouts:
- ResNet-50/101 V1c: the reference release's starting weights (mmcv / mmseg ``ResNetV1c``: a
  deep stem as ``stem.{0,3,6}`` convolutions and ``stem.{1,4,7}`` batch norms), the mmcls
  layout (``stem.{0,1,2}.conv`` / ``.bn``, usually under ``backbone.``), and timm's
  (``conv1.{0,3,6}``, ``conv1.{1,4}``, ``bn1``). Below the stem all three share timm's names.
- ConvNeXt: the official release (``convnext_large_22k_224.pth``: ``downsample_layers``,
  ``stages.i.j.dwconv`` ...), the mmpretrain / mmcls layout (what mmseg's ConvNeXt configs
  load: ``backbone.`` + ``depthwise_conv`` / ``pointwise_conv{1,2}``, the final norm as
  ``norm3``, ``head.fc``) and timm's, through timm's own ConvNeXt filter. The stage norms
  norm0..2 of the release's ConvNeXt (ReinCNN ``stage_norms``) come from the file where it
  holds them (an mmseg-trained backbone), else with their initial weight 1 / bias 0.
Classifier heads are dropped and reported (by the file's own names); every other weight of the
network must come from the file.
"""
import re
from typing import Dict, Tuple

import torch

from .pretrained import CheckpointMismatchError, ConversionReport, _abbrev

__all__ = ["convert_cnn_checkpoint"]

# timm deep stem: conv1.0 conv, conv1.1 bn, conv1.3 conv, conv1.4 bn, conv1.6 conv, bn1.
_MMSEG_STEM = {"stem.0.": "conv1.0.", "stem.1.": "conv1.1.", "stem.3.": "conv1.3.",
               "stem.4.": "conv1.4.", "stem.6.": "conv1.6.", "stem.7.": "bn1."}
_MMCLS_STEM = {"stem.0.conv.": "conv1.0.", "stem.0.bn.": "conv1.1.", "stem.1.conv.": "conv1.3.",
               "stem.1.bn.": "conv1.4.", "stem.2.conv.": "conv1.6.", "stem.2.bn.": "bn1."}
_HEADS = ("fc.", "head.", "neck.", "decode_head.", "auxiliary_head.")  # classifiers; an mmseg model's heads
# mmpretrain / mmcls ConvNeXt names -> the official release's (which timm's filter reads).
_MMPRETRAIN_CONVNEXT = ((".depthwise_conv.", ".dwconv."), (".pointwise_conv1.", ".pwconv1."),
                        (".pointwise_conv2.", ".pwconv2."))
_MMPRETRAIN_NORM = re.compile(r"norm([0-3])\.(weight|bias)$")


# Each renaming step maps {key: (the file's key, tensor)}, so that every message names a
# tensor as the file does.
Named = Dict[str, Tuple[str, torch.Tensor]]


def _strip_backbone_prefix(state: Named) -> Named:
    """mmcls / mmseg / mmpretrain files keep the network under ``backbone.`` beside ``head.``."""
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in state.items()}
    return state


def _rename_resnet(state: Named) -> Named:
    if "conv1.0.weight" in state:
        return dict(state)  # timm
    stem = _MMCLS_STEM if "stem.0.conv.weight" in state else _MMSEG_STEM if "stem.0.weight" in state else None
    if stem is None:
        raise CheckpointMismatchError(
            "not a ResNet V1c checkpoint: expected a deep stem as stem.0.weight (mmseg / mmcv "
            "ResNetV1c), stem.0.conv.weight (mmcls) or conv1.0.weight (timm); a plain ResNet "
            f"(one 7x7 conv1) is another design. First keys: {[n for n, _ in state.values()][:6]}")
    return {next((to + k[len(src):] for src, to in stem.items() if k.startswith(src)), k): v
            for k, v in state.items()}


def _rename_convnext(state: Named, model) -> Named:
    from timm.models.convnext import checkpoint_filter_fn
    if "downsample_layers.0.0.weight" not in state and "stem.0.weight" not in state:
        raise CheckpointMismatchError(
            "not a ConvNeXt checkpoint: expected downsample_layers.0.0.weight (the official "
            "release, mmpretrain / mmcls) or stem.0.weight (timm). First keys: "
            f"{[n for n, _ in state.values()][:6]}")
    stage_norms = {}
    if any(".depthwise_conv." in k for k in state) or "norm3.weight" in state:  # mmpretrain
        official = {}
        for k, v in state.items():
            norm = _MMPRETRAIN_NORM.match(k)
            if norm and norm.group(1) != "3":
                stage_norms[f"stage_norms.{norm.group(1)}.{norm.group(2)}"] = v
                continue
            for src, to in _MMPRETRAIN_CONVNEXT:
                k = k.replace(src, to)
            official[("norm." + norm.group(2)) if norm else
                     ("head." + k[len("head.fc."):]) if k.startswith("head.fc.") else k] = v
        state = official
    if "head.norm.weight" in state or "norm_pre.weight" in state:  # timm's own names
        return dict(state)
    # timm's filter key by key: one it cannot place (a 2-d weight the model lacks or has in
    # another width: a bare KeyError / RuntimeError there) stays under its own name, so that
    # it is refused below, named, with the rest of what the backbone has no place for.
    renamed = dict(stage_norms)
    for k, (name, v) in state.items():
        try:
            one = checkpoint_filter_fn({k: v}, model)  # (empty for keys timm discards)
        except (KeyError, RuntimeError):
            one = {k: v}
        renamed.update({new: (name, v2) for new, v2 in one.items()})
    return renamed


def convert_cnn_checkpoint(state: Dict[str, torch.Tensor], backbone):
    """Convert an ImageNet checkpoint for ``backbone.vit`` (a ReinCNN's timm network).

    Returns (state dict for ``backbone.vit``, ConversionReport); raises CheckpointMismatchError
    for another design, depth or width, naming what differs."""
    named = _strip_backbone_prefix({k: (k, v) for k, v in state.items()})
    rename = _rename_resnet if backbone.family == "resnet" else (
        lambda s: _rename_convnext(s, backbone.vit))
    renamed = rename(named)
    target = backbone.vit.state_dict()
    report = ConversionReport()
    out, used = {}, set()
    for k, (name, v) in renamed.items():
        if k not in target:
            continue
        if v.shape != target[k].shape:
            raise CheckpointMismatchError(
                f"{name}: shape {tuple(v.shape)} in the checkpoint, {tuple(target[k].shape)} in "
                f"the backbone {backbone.arch.timm_name} ({k}): a network of another width; set "
                f"MODEL.CNN.SIZE to the checkpoint's model")
        out[k] = v.float() if v.is_floating_point() else v
        report.converted.append(k)
        used.add(name)
    extra = [name for k, (name, _) in renamed.items() if k not in target and not k.startswith(_HEADS)]
    if extra:
        raise CheckpointMismatchError(
            f"the checkpoint has {len(extra)} weights the backbone has no place for "
            f"({_abbrev(extra)}): a deeper network or another design than "
            f"{backbone.arch.timm_name} (blocks per stage {backbone.stage_depths}); set "
            f"MODEL.CNN.SIZE to the checkpoint's model")
    for k in target:  # batch norm's step counter is bookkeeping, not a weight: 0 if absent
        if k not in out and k.endswith("num_batches_tracked"):
            out[k] = torch.zeros_like(target[k], device="cpu")
    for k in target:  # ConvNeXt stage norms no ImageNet file holds: LayerNorm2d's initial values
        if k not in out and k.startswith("stage_norms."):
            out[k] = (torch.ones if k.endswith(".weight") else torch.zeros)(target[k].shape)
            report.initialised.append(k)
    report.missing = [k for k in target if k not in out]
    if report.missing:
        raise CheckpointMismatchError(
            f"the checkpoint lacks {len(report.missing)} weights of {backbone.arch.timm_name} "
            f"({_abbrev(report.missing)}): a shallower network or another design; set "
            f"MODEL.CNN.SIZE to the checkpoint's model")
    report.dropped = [k for k in state if k not in used]
    return out, report
