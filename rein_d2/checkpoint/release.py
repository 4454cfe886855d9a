"""Reference release checkpoints (mmengine format) -> rein_d2 ReinMask2Former weights.

A released Rein checkpoint is ``{"meta": ..., "state_dict": {...}}`` holding the Rein module
under ``backbone.reins.*`` and the head under ``decode_head.*`` in mmdet's Mask2FormerHead
naming; some also carry the (frozen) VFM under ``backbone.*``. rein_d2's modules keep the
reference's names below those prefixes, so the conversion is a prefix change:

    backbone.reins.X              -> backbone.rein.X    (a CNN's per-stage backbone.reins.<i>.X: kept)
    decode_head.pixel_decoder.X   -> pixel_decoder.X
    decode_head.X (all others)    -> predictor.X
    backbone.X (official VFM)     -> backbone.vit.*   (through convert_official_checkpoint)

Every key is placed and checked against the target model's shapes; a key that cannot be
placed, a shape that differs, or a trainable weight the checkpoint lacks is an error.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from .pretrained import CheckpointMismatchError, _abbrev, convert_official_checkpoint

__all__ = ["ReleaseConversionReport", "convert_release_checkpoint", "unwrap_release_checkpoint"]

# (release prefix, rein_d2 prefix), most specific first.
_PREFIXES = (
    ("backbone.reins.", "backbone.rein."),
    ("decode_head.pixel_decoder.", "pixel_decoder."),
    ("decode_head.", "predictor."),
)
_CNN_PREFIXES = (("backbone.reins.", "backbone.reins."),) + _PREFIXES[1:]
_VFM_PREFIX = "backbone."


@dataclass
class ReleaseConversionReport:
    renamed: Dict[str, str] = field(default_factory=dict)  # release key -> rein_d2 key
    vfm_keys: List[str] = field(default_factory=list)  # release backbone.* keys (VFM weights)
    vfm_dropped: List[str] = field(default_factory=list)  # of those, unused by Rein (e.g. norm)
    ignored_entries: List[str] = field(default_factory=list)  # top-level non-weight entries
    frozen_missing: List[str] = field(default_factory=list)  # VFM keys left to MODEL.WEIGHTS

    def summary(self) -> str:
        rein = sum(k.startswith("backbone.reins.") for k in self.renamed)
        head = len(self.renamed) - rein
        lines = [f"placed {len(self.renamed) + len(self.vfm_keys)} release keys: {rein} Rein, "
                 f"{head} head, {len(self.vfm_keys)} VFM",
                 f"ignored top-level entries: {_abbrev(self.ignored_entries)}"]
        if self.vfm_keys:
            lines.append(f"VFM keys the backbone does not use: {_abbrev(self.vfm_dropped)}")
        if self.frozen_missing:
            lines.append(f"the frozen VFM ({len(self.frozen_missing)} keys) is not in this "
                         "checkpoint: it comes from MODEL.WEIGHTS / --pretrained")
        return "\n".join(lines)


def unwrap_release_checkpoint(ckpt) -> (Dict[str, torch.Tensor], List[str]):
    """The weights of an mmengine checkpoint and the names of its other top-level entries."""
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f"expected a dict checkpoint, got {type(ckpt).__name__}")
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        return ckpt["state_dict"], sorted(k for k in ckpt if k != "state_dict")
    if all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, []  # a bare state dict
    raise CheckpointMismatchError(
        "not a reference release checkpoint: expected {'state_dict': {...}} or a flat state "
        f"dict, found top-level entries {_abbrev(sorted(ckpt))}")


def _describe_missing(missing: List[str], state: Dict[str, torch.Tensor], prefixes) -> str:
    """The model's weights the file lacks, by the names a release gives them, and what to do."""
    release = [next((old + k[len(new):] for old, new in prefixes if k.startswith(new)), k)
               for k in missing]
    head = [k for k in release if k.startswith("decode_head.")]
    if head and not any(k.startswith("decode_head.") for k in state):
        return (f"it holds no decode head, only {_abbrev(sorted(state), 3)}; the model also "
                f"needs the head's {len(head)} decode_head.* weights ({_abbrev(head, 3)}). "
                "Convert the release checkpoint that holds Rein and the head together (the "
                "reference saves both in one file), or add the head's decode_head.* weights "
                "to this file's state_dict")
    return (f"the checkpoint lacks {len(release)} trainable weights of the model: "
            f"{_abbrev(release)} (does the config match the checkpoint? e.g. MODEL.REIN.*, "
            "MODEL.MASK2FORMER.DEC_LAYERS)")


def convert_release_checkpoint(state: Dict[str, torch.Tensor], model: nn.Module,
                               ignored_entries: Optional[List[str]] = None):
    """Map a release state dict onto ``model`` (a ReinMask2Former, may live on the meta device).

    Returns (rein_d2 state dict, ReleaseConversionReport). Raises CheckpointMismatchError naming
    every key that has no place in the model, has another shape, or is missing from the file.
    """
    target = model.state_dict()
    report = ReleaseConversionReport(ignored_entries=list(ignored_entries or []))
    out, vfm, problems = {}, {}, []
    # A CNN's four per-stage Rein modules keep the release's name (backbone.reins.<stage>.*).
    prefixes = (_CNN_PREFIXES if isinstance(getattr(model.backbone, "reins", None), nn.ModuleList)
                else _PREFIXES)
    for key, value in state.items():
        new = next((new + key[len(old):] for old, new in prefixes if key.startswith(old)), None)
        if new is None and key.startswith(_VFM_PREFIX):
            vfm[key[len(_VFM_PREFIX):]] = value
            continue
        if new is None:
            problems.append(f"{key}: no rein_d2 module takes this prefix (expected backbone.reins.*,"
                            " backbone.* or decode_head.*)")
        elif new not in target:
            problems.append(f"{key} -> {new}: not in this model (does the config match the "
                            "checkpoint? e.g. MODEL.REIN.LINK_TOKEN_TO_QUERY, LORA_DIM, DEC_LAYERS)")
        elif tuple(target[new].shape) != tuple(value.shape):
            problems.append(f"{key} -> {new}: shape {tuple(value.shape)} in the checkpoint, "
                            f"{tuple(target[new].shape)} in the model")
        else:
            out[new] = value
            report.renamed[key] = new
    if vfm:
        if not hasattr(model.backbone, "vit"):
            problems.append(f"{len(vfm)} backbone.* VFM keys but the model's backbone is not a "
                            "Rein ViT")
        else:
            # The official converter refuses a VFM of another design and reports the keys Rein
            # does not use (final norm, mask token, heads), exactly as for MODEL.WEIGHTS files.
            try:
                converted, vfm_report = convert_official_checkpoint(vfm, model.backbone)
            except CheckpointMismatchError as e:
                problems.append(f"the VFM under backbone.*: {e}")
            else:
                report.vfm_dropped = [_VFM_PREFIX + k for k in vfm_report.dropped]
                out.update({f"backbone.vit.{k}": v for k, v in converted.items()})
                report.vfm_keys = sorted(_VFM_PREFIX + k for k in vfm)
    missing = sorted(k for k in target if k not in out and not k.startswith("backbone.vit."))
    if missing:
        problems.append(_describe_missing(missing, state, prefixes))
    if len(problems) == 1:
        raise CheckpointMismatchError(f"cannot convert this release checkpoint: {problems[0]}")
    if problems:
        raise CheckpointMismatchError("cannot convert this release checkpoint:\n  "
                                      + "\n  ".join(problems))
    report.frozen_missing = sorted(k for k in target if k.startswith("backbone.vit.")
                                   and k not in out)
    return out, report
