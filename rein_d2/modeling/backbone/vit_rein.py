"""Frozen timm ViTs refined by Rein, as detectron2 backbones (docs/method.md sections 1 and 3).

Each supported vision foundation model is a timm model definition (wrapped, not rewritten);
this module runs its blocks one by one, applies Rein after the refined blocks and turns the
patch tokens of four blocks into res2..res5 at strides 4, 8, 16 and 32. The baselines Rein is
compared with (LoRA on qkv, deep visual prompts) and activation checkpointing of the blocks
are options of the same backbone.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import timm
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.modeling import Backbone, ShapeSpec
from torch import nn

from ..rein import Rein
from .peft import apply_lora

__all__ = ["VFM_ARCHS", "VFMArch", "ReinViT", "build_timm_vit", "default_out_indices",
           "resize_pos_grid", "timm_vit_arch"]


@dataclass(frozen=True)
class VFMArch:
    """One vision foundation model: its family and the timm definition it is built from."""

    family: str  # "dinov2", "dinov3", "eva02", "clip", "sam", "mae", or "timm" (any by name)
    timm_name: str  # timm model definition (built without weights)


# Keys are (family, size); DINOv2 also has "<size>_reg4" with four register tokens.
VFM_ARCHS: Dict[tuple, VFMArch] = {
    **{("dinov2", s): VFMArch("dinov2", f"vit_{s}_patch14_dinov2")
       for s in ("small", "base", "large", "giant")},
    **{("dinov2", f"{s}_reg4"): VFMArch("dinov2", f"vit_{s}_patch14_reg4_dinov2")
       for s in ("small", "base", "large", "giant")},
    ("eva02", "large"): VFMArch("eva02", "eva02_large_patch14_224"),
    # OpenAI CLIP ViT-L/14 uses QuickGELU.
    ("clip", "large"): VFMArch("clip", "vit_large_patch14_clip_quickgelu_224"),
    **{("sam", s): VFMArch("sam", f"samvit_{s}_patch16") for s in ("base", "large", "huge")},
    ("mae", "large"): VFMArch("mae", "vit_large_patch16_224"),
    # DINOv3: native patch 16, rotary positions, 4 register tokens. The "_qkvb" definitions
    # hold the q and v biases Meta's files store (zero in the distilled models, which load
    # them as zeros: the same numbers); the 7B model has none.
    **{("dinov3", s): VFMArch("dinov3", f"vit_{s}_patch16_dinov3_qkvb")
       for s in ("small", "small_plus", "base", "large", "huge_plus")},
    ("dinov3", "7b"): VFMArch("dinov3", "vit_7b_patch16_dinov3"),
}

# Parts of the timm models that the features never pass through; they are removed so that
# checkpoints and state dicts hold only what is used.
_UNUSED_MODULES = ("norm", "fc_norm", "head", "head_drop", "neck", "attn_pool")


def build_timm_vit(arch: VFMArch, img_size: int, patch_size: int, **overrides) -> nn.Module:
    """The timm model of ``arch`` at the given geometry, without weights or unused parts."""
    kwargs = dict(overrides, img_size=img_size, patch_size=patch_size, num_classes=0,
                  global_pool="")
    if arch.family != "sam":
        kwargs["dynamic_img_size"] = True  # patch grid follows the input
    elif "depth" in overrides and "global_attn_indexes" not in overrides:
        # SAM's own layout at any depth (B 2,5,8,11; L 5,11,17,23; H 7,15,23,31): the last
        # block of each quarter attends globally; timm would keep H's indexes past a smaller depth.
        kwargs["global_attn_indexes"] = [overrides["depth"] * k // 4 - 1 for k in (1, 2, 3, 4)]
    vit = timm.create_model(arch.timm_name, pretrained=False, **kwargs)
    for name in _UNUSED_MODULES:
        if isinstance(getattr(vit, name, None), nn.Module):
            setattr(vit, name, nn.Identity())
    return vit


def timm_vit_arch(name: str) -> VFMArch:
    """A timm ViT by name, when rein_d2 can run its blocks one by one: timm's VisionTransformer
    and Eva designs (DeiT, SigLIP, CLIP, Perception Encoder, EVA, RoPE ViTs...). Anything else
    is refused with the reason."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if not name:
        raise ValueError("MODEL.BACKBONE.NAME ReinTimmViT needs MODEL.VIT.TIMM_NAME, a timm model "
                         "name such as vit_base_patch16_siglip_224")
    if not timm.is_model(name):
        raise ValueError(f"MODEL.VIT.TIMM_NAME {name!r} is not a timm model (see "
                         f"timm.list_models('vit_*'))")
    with torch.device("meta"):
        cls = type(timm.create_model(name, pretrained=False))
    if not issubclass(cls, (VisionTransformer, Eva)):
        raise ValueError(
            f"MODEL.VIT.TIMM_NAME {name!r} is a timm {cls.__name__}, not a VisionTransformer or "
            f"Eva design: rein_d2 refines a ViT block by block on a fixed token layout, which "
            f"{cls.__name__} does not have (variable-length NaFlex sequences, hierarchical stages "
            f"or windowed maps). Use a VisionTransformer / Eva model, or a dedicated backbone "
            f"(ReinSAM for SAM)")
    return VFMArch("timm", name)


def default_out_indices(depth: int) -> List[int]:
    """Blocks whose outputs become res2..res5 (docs/method.md section 3)."""
    if depth == 24:
        return [7, 11, 15, 23]
    if depth == 12:
        return [3, 5, 7, 11]
    return [depth * k // 4 - 1 for k in (1, 2, 3, 4)]


def resize_pos_grid(grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubically resize a position grid [1, C, h, w] to ``size`` at run time.

    Follows the reference DINOv2 code exactly (scale factors of (size + 0.1) / stored size, as
    in the original DINO), so features match the reference at every input size.
    """
    h, w = grid.shape[-2:]
    dtype = grid.dtype
    out = F.interpolate(
        grid.float(),
        scale_factor=((size[0] + 0.1) / h, (size[1] + 0.1) / w),
        mode="bicubic",
        align_corners=False,
    )
    if tuple(out.shape[-2:]) != tuple(size):  # guard against a float rounding surprise
        out = F.interpolate(grid.float(), size=tuple(size), mode="bicubic", align_corners=False)
    return out.to(dtype)


class ReinViT(Backbone):
    """A frozen timm ViT with Rein after its refined blocks; outputs res2..res5.

    Args:
        arch: which VFM (see ``VFM_ARCHS``).
        img_size: image size the stored position table is laid out for (grid img_size / 16).
        patch_size: patch size the model runs at (official 14x14 kernels are resized offline).
        out_indices: blocks whose outputs become res2..res5 (default per docs/method.md section 3).
        rein: Rein keyword arguments (see :class:`Rein`); None runs the plain frozen VFM.
        freeze: freeze the VFM and keep it in eval mode (False = full fine-tuning).
        neck: "resize" (bilinear x4, x2, x1, x0.5) or "deconv" (learned ConvTranspose /
            GroupNorm / MaxPool necks, as Rein's CLIP variant).
        timm_overrides: extra timm arguments (embed_dim, depth, num_heads) for custom sizes.
        lora_rank: LoRA baseline: rank r of a trainable update of every block's qkv
            projection (0 = off); see :func:`~.peft.apply_lora`.
        lora_alpha: the LoRA update is scaled by lora_alpha / lora_rank.
        vpt_tokens: VPT-deep baseline: learnable prompt tokens given to each block after the
            prefix tokens and dropped after it (0 = off; DINOv2, CLIP and MAE only).
        checkpoint_blocks: in training with gradients, recompute this many blocks (the first
            ones; -1 = all), each with its prompts and Rein refinement, in the backward pass
            instead of storing their activations (0 = none).
    """

    def __init__(
        self,
        *,
        arch: VFMArch,
        img_size: int = 512,
        patch_size: int = 16,
        out_indices: Optional[Sequence[int]] = None,
        rein: Optional[dict] = None,
        freeze: bool = True,
        neck: str = "resize",
        timm_overrides: Optional[dict] = None,
        lora_rank: int = 0,
        lora_alpha: float = 16,
        vpt_tokens: int = 0,
        checkpoint_blocks: int = 0,
    ):
        super().__init__()
        self.arch = arch
        self.family = arch.family
        self.patch_size = patch_size
        self.img_size = img_size
        self.timm_overrides = dict(timm_overrides or {})
        self.vit = build_timm_vit(arch, img_size, patch_size, **self.timm_overrides)
        if self.family == "dinov3":
            # Meta's files store the rope periods (bfloat16-rounded) and Meta's model uses those;
            # timm recomputes them in float32 as a non-persistent buffer. Made persistent, the
            # converted file's periods are the ones used (and a file must provide them).
            rope = self.vit.rope
            rope.register_buffer("periods", rope.periods, persistent=True)
        self.embed_dim = self.vit.embed_dim
        depth = len(self.vit.blocks)

        if self.family == "sam":
            # Rein refines SAM only after its global-attention blocks.
            self.rein_blocks = [i for i, b in enumerate(self.vit.blocks) if b.window_size == 0]
            self.num_prefix_tokens = 0
        else:
            self.rein_blocks = list(range(depth))
            self.num_prefix_tokens = self.vit.num_prefix_tokens
        self.out_indices = list(out_indices) if out_indices else (
            self.rein_blocks if self.family == "sam" else default_out_indices(depth))
        if len(self.out_indices) != 4 or max(self.out_indices) >= depth:
            raise ValueError(
                f"out_indices must name 4 of the {depth} blocks of {arch.timm_name}, got "
                f"{self.out_indices}")

        self.rein = None
        if rein is not None:
            self.rein = Rein(num_layers=len(self.rein_blocks), embed_dim=self.embed_dim,
                             patch_size=patch_size, **rein)
        self._rein_layer = {b: i for i, b in enumerate(self.rein_blocks)}

        self.neck_type = neck
        if neck == "deconv":
            c = self.embed_dim
            self.necks = nn.ModuleList([
                nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2), nn.GroupNorm(32, c), nn.GELU(),
                              nn.ConvTranspose2d(c, c, 2, 2)),
                nn.ConvTranspose2d(c, c, 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2, 2),
            ])
        elif neck != "resize":
            raise ValueError(f"neck must be 'resize' or 'deconv', got {neck!r}")

        # Deep VPT inserts tokens between the prefix and the patch tokens; EVA02's rotary
        # embedding and SAM's windows assume the patch tokens alone.
        self.vpt_prompts = None
        if vpt_tokens:
            if self.family not in ("dinov2", "clip", "mae"):
                raise ValueError(
                    f"VPT (MODEL.VIT.VPT_TOKENS={vpt_tokens}) is supported for DINOv2/CLIP/MAE "
                    f"only, not {self.family} ({arch.timm_name}): its blocks expect patch tokens "
                    "only (rotary / windowed layout); set MODEL.VIT.VPT_TOKENS 0")
            bound = math.sqrt(6.0 / (3 * patch_size**2 + self.embed_dim))  # as the VPT paper
            self.vpt_prompts = nn.Parameter(torch.empty(depth, vpt_tokens, self.embed_dim))
            nn.init.uniform_(self.vpt_prompts, -bound, bound)
        self.checkpoint_blocks = depth if checkpoint_blocks < 0 else min(checkpoint_blocks, depth)

        self.freeze = freeze
        if freeze:
            self.vit.requires_grad_(False)
            self.vit.eval()
        if lora_rank:  # after freezing: the LoRA factors train
            apply_lora(self.vit, rank=lora_rank, alpha=lora_alpha)

        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_strides = dict(zip(self._out_features, (4, 8, 16, 32)))
        self._out_feature_channels = {k: self.embed_dim for k in self._out_features}

    # -- detectron2 Backbone interface ---------------------------------------------------
    @property
    def size_divisibility(self) -> int:
        # res5 is the stride-16 grid halved: inputs must be multiples of 32 for exact strides.
        return 2 * self.patch_size

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self.size_divisibility}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
            for k in self._out_features
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.vit.eval()  # frozen VFM: drop-path and dropout stay off while Rein trains
        return self

    def linked_queries(self) -> Optional[torch.Tensor]:
        """Rein's linked Mask2Former queries [m, D], or None without the query link."""
        return self.rein.linked_queries() if self.rein is not None else None

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input size {h}x{w} is not a multiple of the patch size {self.patch_size}; pad "
                f"it (detectron2 models do, through backbone.size_divisibility = "
                f"{self.size_divisibility})")
        if self.family == "sam":
            maps = self._forward_sam(x)
        else:
            maps = self._forward_tokens(x)
        return dict(zip(self._out_features, self._pyramid(maps)))

    def _pyramid(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.neck_type == "deconv":
            return [neck(m) for neck, m in zip(self.necks, maps)]
        return [
            m if s == 1 else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
            for m, s in zip(maps, (4, 2, 1, 0.5))
        ]

    def _run(self, step, x: torch.Tensor, i: int, *args):
        """``step(x, i, *args)`` for block i, through activation checkpointing when that is on
        for the block and a backward pass will follow (the recomputation replays the same
        random state)."""
        args = (x, i) + args
        if i < self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step, *args, use_reentrant=False)
        return step(*args)

    def _refine(self, x: torch.Tensor, block: int, num_prefix: int) -> torch.Tensor:
        if self.rein is None or block not in self._rein_layer:
            return x
        return self.rein(x, self._rein_layer[block], num_prefix_tokens=num_prefix)

    def _embed(self, x: torch.Tensor):
        """Patch embedding + position table + prefix tokens, for timm VisionTransformer / Eva."""
        vit = self.vit
        x = vit.patch_embed(x)  # [B, gh, gw, C] (dynamic_img_size)
        b, gh, gw, c = x.shape
        if self.family == "timm":  # a ViT by name: timm's own position handling, exactly
            out = vit._pos_embed(x)
            x, rope = out if isinstance(out, tuple) else (out, None)  # Eva also gives its rope
            return x, (gh, gw), rope
        x = x.reshape(b, gh * gw, c)
        prefix = []
        if vit.cls_token is not None:
            prefix.append(vit.cls_token.expand(b, -1, -1))
        if getattr(vit, "reg_token", None) is not None:
            prefix.append(vit.reg_token.expand(b, -1, -1))
        pos = vit.pos_embed
        if pos is not None:
            n_pos_prefix = 0 if vit.no_embed_class else self.num_prefix_tokens
            pos_prefix, pos_grid = pos[:, :n_pos_prefix], pos[:, n_pos_prefix:]
            s = math.isqrt(pos_grid.shape[1])
            if (gh, gw) != (s, s):
                grid = pos_grid.reshape(1, s, s, c).permute(0, 3, 1, 2)
                pos_grid = resize_pos_grid(grid, (gh, gw)).permute(0, 2, 3, 1).reshape(1, gh * gw, c)
            if vit.no_embed_class:
                x = x + pos_grid
                x = torch.cat(prefix + [x], dim=1)
            else:
                x = torch.cat(prefix + [x], dim=1) + torch.cat([pos_prefix, pos_grid], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1)
        rope = None
        if getattr(vit, "rope", None) is not None:
            rope = vit.rope.get_embed(shape=(gh, gw))
        return x, (gh, gw), rope

    def _forward_tokens(self, x: torch.Tensor) -> List[torch.Tensor]:
        x, (gh, gw), rope = self._embed(x)
        x = self.vit.norm_pre(x)
        p = self.num_prefix_tokens
        maps = []
        for i in range(len(self.vit.blocks)):
            x = self._run(self._token_step, x, i, rope)
            if i in self.out_indices:
                maps.append(x[:, p:].transpose(1, 2).reshape(x.shape[0], -1, gh, gw).contiguous())
        return maps

    def _token_step(self, x: torch.Tensor, i: int, rope: Optional[torch.Tensor]) -> torch.Tensor:
        """Block i with its VPT prompts (after the prefix tokens, dropped after the block), then
        its Rein refinement, which thus sees the same token layout as without prompts."""
        p = self.num_prefix_tokens
        if self.vpt_prompts is not None:
            prompts = self.vpt_prompts[i].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :p], prompts, x[:, p:]], dim=1)
        blk = self.vit.blocks[i]
        x = blk(x) if rope is None else blk(x, rope=rope)
        if self.vpt_prompts is not None:
            x = torch.cat([x[:, :p], x[:, p + self.vpt_prompts.shape[1]:]], dim=1)
        return self._refine(x, i, p)

    def _sam_step(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """SAM block i on the [B, gh, gw, C] map, then Rein after the global blocks."""
        x = self.vit.blocks[i](x)
        if i in self._rein_layer:
            b, gh, gw, c = x.shape
            x = self._refine(x.reshape(b, gh * gw, c), i, 0).reshape(b, gh, gw, c)
        return x

    def _forward_sam(self, x: torch.Tensor) -> List[torch.Tensor]:
        vit = self.vit
        x = vit.patch_embed(x)  # [B, gh, gw, C]
        b, gh, gw, c = x.shape
        if vit.pos_embed is not None:
            pos = vit.pos_embed
            if tuple(pos.shape[1:3]) != (gh, gw):
                pos = resize_pos_grid(pos.permute(0, 3, 1, 2), (gh, gw)).permute(0, 2, 3, 1)
            x = x + pos
        x = vit.norm_pre(x)
        maps = []
        for i in range(len(vit.blocks)):
            x = self._run(self._sam_step, x, i)
            if i in self.out_indices:
                maps.append(x.permute(0, 3, 1, 2).contiguous())
        return maps
