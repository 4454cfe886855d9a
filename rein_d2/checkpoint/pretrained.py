"""Official VFM checkpoints -> weights for a rein_d2 backbone (docs/method.md section 3).

Keys are renamed with timm's own checkpoint filters (applied to a weightless copy of the model
at the checkpoint's own geometry, so that they only rename), then the patch-embedding kernel
and the patch part of the position table are resized bicubically (align_corners=False) to the
backbone's patch size and grid, exactly as the reference converts them offline.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F

from ..modeling.backbone.peft import lora_parameter_names
from ..utils.cli import UserError
from .io import is_torchscript, read_checkpoint, read_torchscript, require_checkpoint_file
from ..modeling.backbone.vit_rein import ReinViT, build_timm_vit

__all__ = ["ConversionReport", "CheckpointMismatchError", "load_official_checkpoint",
           "detect_family", "convert_official_checkpoint", "unused_source_keys"]

_DINOV3_PERIODS = "rope_embed.periods"  # Meta's stored rope periods (bfloat16)
_FAMILY_NAMES = {"dinov2": "DINOv2", "dinov3": "DINOv3", "eva02": "EVA02", "clip": "OpenAI CLIP",
                 "sam": "SAM", "mae": "MAE", "timm": "timm"}


class CheckpointMismatchError(UserError):
    """The checkpoint does not hold the architecture the backbone was configured for."""


@dataclass
class ConversionReport:
    converted: List[str] = field(default_factory=list)  # backbone keys written
    resized: List[str] = field(default_factory=list)  # of those, resized to the new geometry
    dropped: List[str] = field(default_factory=list)  # checkpoint keys the backbone does not use
    missing: List[str] = field(default_factory=list)  # backbone keys the checkpoint lacks
    # backbone keys no file of the format holds, written with the model's own values (a
    # ConvNeXt's new stage norms, a DINOv3 file's absent rope periods)
    initialised: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)} keys ({len(self.resized)} resized: "
                 f"{', '.join(self.resized) or 'none'})",
                 f"dropped {len(self.dropped)} keys: {_abbrev(self.dropped)}",
                 f"missing {len(self.missing)} keys: {_abbrev(self.missing)}"]
        if self.initialised:
            lines.append(f"not in the file, written with the model's initial values "
                         f"({len(self.initialised)} keys): {_abbrev(self.initialised)}")
        return "\n".join(lines)


def _abbrev(keys: List[str], n: int = 12) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def unused_source_keys(state: Dict[str, torch.Tensor], renamed: Dict[str, torch.Tensor],
                       used: List[str]) -> List[str]:
    """Keys of the file's ``state`` whose tensors did not reach the output, by the file's own
    names. ``renamed`` is the state under the backbone's names and ``used`` the renamed keys
    written: renaming keeps storages (reshaped views share them), so a source tensor is used
    when its storage reached the output."""
    ptrs = {renamed[k].untyped_storage().data_ptr() for k in used}
    return [k for k, v in state.items() if v.untyped_storage().data_ptr() not in ptrs]


def load_official_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Read an official VFM file into a flat {key: tensor} dict.

    Handles plain state dicts (DINOv2, SAM), dicts wrapped in "model"/"module"/"state_dict"
    (EVA02, MAE) and TorchScript archives (OpenAI CLIP). Pickles are read with
    weights_only=True; a TorchScript archive's tensors are read without loading it (torch.jit.load
    would run the archive's code).
    """
    require_checkpoint_file(path)
    with open(path, "rb") as f:
        data = f.read()
    if is_torchscript(data):
        return {k: v.float() for k, v in read_torchscript(path, data).items()}
    obj = read_checkpoint(path, data)
    for wrapper in ("model_ema", "model", "module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def detect_family(state: Dict[str, torch.Tensor]) -> str:
    """Which official format a flat state dict is in, from its key names."""
    if "visual.class_embedding" in state or "visual.conv1.weight" in state:
        return "clip"
    if "image_encoder.patch_embed.proj.weight" in state:
        return "sam"
    if "storage_tokens" in state or any(k.startswith("rope_embed.") for k in state):
        return "dinov3"  # (before DINOv2: it has mask_token and ls1.gamma too)
    if "blocks.0.attn.q_proj.weight" in state or any(k.startswith("rope.") for k in state):
        return "eva02"
    if "mask_token" in state and ("blocks.0.ls1.gamma" in state or "register_tokens" in state):
        return "dinov2"
    if "blocks.0.attn.qkv.weight" in state and "cls_token" in state:
        return "mae"
    raise CheckpointMismatchError(
        "unrecognised checkpoint: expected the official key names of DINOv2 (mask_token, "
        "blocks.N.ls1.gamma), DINOv3 (storage_tokens, rope_embed.periods), EVA02 (blocks.N.attn.q_proj), OpenAI CLIP (visual.*), SAM "
        f"(image_encoder.*) or MAE (blocks.N.attn.qkv); first keys: {list(state)[:8]}")


def _source_geometry(state: Dict[str, torch.Tensor], family: str):
    """(patch size, image size) the checkpoint was trained at, from its own tensors."""
    kernel = {"clip": "visual.conv1.weight", "sam": "image_encoder.patch_embed.proj.weight"}.get(
        family, "patch_embed.proj.weight")
    patch = state[kernel].shape[-1]
    if family == "sam":
        return patch, state["image_encoder.pos_embed"].shape[1] * patch
    if family == "dinov3" or (family == "timm" and "pos_embed" not in state):
        return patch, None  # rotary positions: no table, any image size
    pos = state["visual.positional_embedding"] if family == "clip" else state["pos_embed"]
    n = pos.shape[-2]
    grid = math.isqrt(n - 1) if math.isqrt(n - 1) ** 2 == n - 1 else math.isqrt(n)
    return patch, grid * patch


def _describe(state: Dict[str, torch.Tensor]) -> str:
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    width = state["patch_embed.proj.weight"].shape[0] if "patch_embed.proj.weight" in state else "?"
    return f"width {width}, {len(blocks)} blocks"


def convert_official_checkpoint(state: Dict[str, torch.Tensor], backbone: ReinViT):
    """Convert an official flat state dict for ``backbone.vit``.

    Returns (state dict for ``backbone.vit``, ConversionReport). Raises CheckpointMismatchError
    when the checkpoint is of another family or size than the backbone.
    """
    if getattr(backbone, "stage_depths", None) is not None:  # a ReinCNN
        from .cnn import convert_cnn_checkpoint
        return convert_cnn_checkpoint(state, backbone)
    # A ViT by timm name takes its timm (or original) checkpoint through that model's filter.
    family = "timm" if backbone.family == "timm" else detect_family(state)
    if family != backbone.family:
        raise CheckpointMismatchError(
            f"this is a {_FAMILY_NAMES[family]} checkpoint, but the backbone is "
            f"{_FAMILY_NAMES[backbone.family]} ({backbone.arch.timm_name}); pick the config of "
            f"the checkpoint's model (MODEL.BACKBONE.NAME)")
    patch, img = _source_geometry(state, family)
    # Rename only: a weightless model at the checkpoint's geometry makes timm's filter skip its
    # own resampling (which differs from the reference's bicubic resize).
    with torch.device("meta"):
        source = build_timm_vit(backbone.arch, img or backbone.img_size, patch, **backbone.timm_overrides)
    filter_fn = _timm_filter(family, source)
    renamed = filter_fn(dict(state), source)
    if family == "dinov3" and _DINOV3_PERIODS in state:
        # timm's filter drops the stored rope periods and recomputes them in float32; Meta's
        # model uses the stored (bfloat16-rounded) ones, and so does rein_d2 (ReinViT).
        renamed["rope.periods"] = state[_DINOV3_PERIODS]

    target = backbone.vit.state_dict()
    # Block weights the backbone has no place for (a deeper model, or another block design)
    # must not be dropped silently: that would load a truncated or different VFM.
    extra = [k for k in renamed if k.startswith("blocks.") and k not in target]
    if extra:
        raise CheckpointMismatchError(
            f"the checkpoint has {len(extra)} block weights the backbone has no place for "
            f"({_abbrev(extra)}). The checkpoint has {_describe(renamed)}; the backbone "
            f"{backbone.arch.timm_name} has width {backbone.embed_dim}, "
            f"{len(backbone.vit.blocks)} blocks: set MODEL.VIT.SIZE to the checkpoint's size")
    report = ConversionReport()
    out = {}
    for k, v in renamed.items():
        if k not in target:
            continue
        v = v.float()
        if v.shape != target[k].shape:
            v = _resize(k, v, target[k].shape, backbone)
            report.resized.append(k)
        if v.shape != target[k].shape:
            raise CheckpointMismatchError(
                f"{k}: checkpoint shape {tuple(v.shape)} does not fit the backbone's "
                f"{tuple(target[k].shape)}. The checkpoint has {_describe(renamed)}; the "
                f"backbone {backbone.arch.timm_name} has width {backbone.embed_dim}, "
                f"{len(backbone.vit.blocks)} blocks: set MODEL.VIT.SIZE to the checkpoint's size")
        out[k] = v
        report.converted.append(k)
    report.dropped = unused_source_keys(state, renamed, report.converted)
    if "rope.periods" in target and "rope.periods" not in out:  # a DINOv3 file without them
        out["rope.periods"] = backbone.vit.rope._compute_periods()  # timm's float32 formula
        report.initialised.append("rope.periods")
    weights = _checkpoint_weights(backbone)
    report.missing = [k for k in target if k not in out and k in weights]
    if report.missing:
        raise CheckpointMismatchError(
            f"the checkpoint lacks {len(report.missing)} weights the backbone needs "
            f"({_abbrev(report.missing)}). The checkpoint has {_describe(renamed)}; the backbone "
            f"{backbone.arch.timm_name} has {len(backbone.vit.blocks)} blocks: set MODEL.VIT.SIZE "
            "(and MODEL.VIT.NUM_REGISTERS) to the checkpoint's model")
    return out, report


def _checkpoint_weights(backbone: ReinViT) -> set:
    """Keys of ``backbone.vit`` an official checkpoint provides. Buffers computed at build
    time (EVA02's rotary tables) are not stored in checkpoints, nor are the LoRA factors a
    baseline adds (they start from their own initialisation)."""
    return {n for n, _ in backbone.vit.named_parameters()} - lora_parameter_names(backbone.vit)


def _timm_filter(family: str, model):
    if family == "timm":  # the filter of the module that defines the model
        import importlib
        module = importlib.import_module(type(model).__module__)
        return getattr(module, "checkpoint_filter_fn", lambda state, model: state)
    if family == "sam":
        from timm.models.vision_transformer_sam import checkpoint_filter_fn
    elif family in ("eva02", "dinov3"):  # timm's Eva filter knows Meta's DINOv3 names too
        from timm.models.eva import checkpoint_filter_fn
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn
    return checkpoint_filter_fn


def _resize(key: str, v: torch.Tensor, shape: torch.Size, backbone: ReinViT) -> torch.Tensor:
    """Bicubic resize of the patch kernel and the patch part of position tables; linear resize
    of SAM's relative position tables (as SAM itself does at run time)."""
    if key == "patch_embed.proj.weight":
        return F.interpolate(v, size=tuple(shape[-2:]), mode="bicubic", align_corners=False)
    if key == "pos_embed" and v.dim() == 4:  # SAM: [1, H, W, C]
        grid = F.interpolate(v.permute(0, 3, 1, 2), size=tuple(shape[1:3]), mode="bicubic",
                             align_corners=False)
        return grid.permute(0, 2, 3, 1)
    if key == "pos_embed":  # [1, P + N, C]; the P prefix entries (cls) are kept
        n_new = shape[1]
        n_prefix = 0 if backbone.vit.no_embed_class else backbone.num_prefix_tokens
        old, new = math.isqrt(v.shape[1] - n_prefix), math.isqrt(n_new - n_prefix)
        c = v.shape[-1]
        grid = v[:, n_prefix:].reshape(1, old, old, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        return torch.cat([v[:, :n_prefix], grid.permute(0, 2, 3, 1).reshape(1, new * new, c)], 1)
    if key.endswith(("rel_pos_h", "rel_pos_w")):
        t = F.interpolate(v.t().unsqueeze(0), size=shape[0], mode="linear")
        return t[0].t()
    return v
