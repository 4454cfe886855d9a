"""LoRA on the frozen VFM's attention, the parameter-efficient baseline Rein is compared with.

The wrapped projections keep their own weight and bias under the same names, so the VFM
checkpoints (``...attn.qkv.weight``) load unchanged; only ``lora_a`` / ``lora_b`` are new.
"""
import math
from typing import Set

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "apply_lora", "lora_parameter_names"]


class LoRALinear(nn.Linear):
    """``base``'s affine map plus a scaled low-rank update: W x + b + (alpha / r) B(A x).

    A subclass of nn.Linear that takes over ``base``'s weight and bias (the same tensors, so
    state-dict keys and any sharing stay as they were). B starts at zero: the wrapped layer
    computes exactly what ``base`` did until training moves B.
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float):
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        w = base.weight
        # Built on the meta device: its own fresh weight is replaced by base's right away.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device="meta", dtype=w.dtype)
        self.weight = base.weight
        self.bias = base.bias
        self.rank = rank
        self.scale = alpha / rank
        self.lora_a = nn.Linear(base.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * self.lora_b(self.lora_a(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def apply_lora(vit: nn.Module, *, rank: int, alpha: float) -> None:
    """Wrap the attention input projections of every block of a timm ViT in LoRALinear.

    The fused ``attn.qkv`` where the block has one (timm VisionTransformer: DINOv2, CLIP, MAE;
    SAM); otherwise each of ``q_proj``, ``k_proj``, ``v_proj`` (EVA02, whose official weights
    keep them separate), each with its own rank-r update.
    """
    for i, blk in enumerate(vit.blocks):
        attn = blk.attn
        names = ("qkv",) if getattr(attn, "qkv", None) is not None else ("q_proj", "k_proj", "v_proj")
        for name in names:
            linear = getattr(attn, name, None)
            if type(linear) is not nn.Linear:
                raise ValueError(
                    f"LoRA expects block {i}'s attention ({type(attn).__name__}) to have an "
                    f"nn.Linear {name}, found {type(linear).__name__}; set MODEL.VIT.LORA_RANK 0 "
                    "for this model")
            setattr(attn, name, LoRALinear(linear, rank=rank, alpha=alpha))


def lora_parameter_names(module: nn.Module) -> Set[str]:
    """Names (relative to ``module``) of the LoRA factors inside it: trained parameters that
    live inside the VFM but are not the VFM's own weights."""
    ids = {id(p) for m in module.modules() if isinstance(m, LoRALinear)
           for p in (m.lora_a.weight, m.lora_b.weight)}
    return {n for n, p in module.named_parameters() if id(p) in ids}
