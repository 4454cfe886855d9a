"""Multi-scale deformable attention (Deformable DETR).

On CUDA, Deformable DETR's own kernel is used when the ``ms-deform-attn`` wheel (PyPI; module
``MultiScaleDeformableAttention``) imports: ``pip install -e ".[cuda]"``. Everywhere else, and
whenever that module is missing or does not load against this torch, the pure-PyTorch path
runs: each level's values are sampled bilinearly with grid_sample at the predicted locations
and summed with the attention weights. Both compute the same function.
"""
import functools
import logging
from typing import List, Tuple

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)
IM2COL_STEP = 64  # the kernel's images per block (Deformable DETR's default)


@functools.lru_cache(maxsize=None)
def cuda_kernel():
    """The compiled op module, or None (not installed, or built for another torch)."""
    try:
        import MultiScaleDeformableAttention as kernel
    except (ImportError, OSError) as e:  # OSError: undefined symbols of another torch build
        logger.info("deformable attention: the pure-PyTorch path (no CUDA kernel: %s)", e)
        return None
    return kernel


class _KernelSample(torch.autograd.Function):
    """The compiled op as an autograd function (its backward is the op's own)."""

    @staticmethod
    def forward(ctx, value, shapes, starts, locations, weights):
        kernel = cuda_kernel()
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return kernel.ms_deform_attn_forward(value, shapes, starts, locations, weights, IM2COL_STEP)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        g_value, g_loc, g_weights = cuda_kernel().ms_deform_attn_backward(
            value, shapes, starts, locations, weights, grad.contiguous(), IM2COL_STEP)
        return g_value, None, None, g_loc, g_weights


def use_kernel(value: torch.Tensor) -> bool:
    """The compiled op for CUDA tensors when it is installed."""
    return value.is_cuda and cuda_kernel() is not None


def ms_deform_attn(value: torch.Tensor, shapes: List[Tuple[int, int]], locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """ms_deform_attn_sample's contract, through the CUDA kernel where use_kernel() says so."""
    if not use_kernel(value):
        return ms_deform_attn_sample(value, shapes, locations, weights)
    sizes = torch.as_tensor(shapes, dtype=torch.long, device=value.device)
    starts = torch.cat([sizes.new_zeros(1), (sizes[:, 0] * sizes[:, 1]).cumsum(0)[:-1]])
    # the op is float32 only: under AMP it runs in float32 and hands back the input's dtype
    out = _KernelSample.apply(value.float().contiguous(), sizes, starts,
                              locations.float().contiguous(), weights.float().contiguous())
    return out.to(value.dtype)


def ms_deform_attn_sample(value: torch.Tensor, shapes: List[Tuple[int, int]],
                          locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """value [B, S, heads, d]; locations [B, Q, heads, levels, points, 2] in [0, 1] (x, y);
    weights [B, Q, heads, levels, points] -> [B, Q, heads * d]."""
    b, _, heads, d = value.shape
    _, q, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    # Points-major grids [B*heads, points, Q, 2]: each level's samples come out
    # [B*heads, d, points, Q] with Q innermost, so grid_sample and the weighted sum over points
    # run along long contiguous rows, and no [.., levels * points] stack is materialised (the
    # query-major layout of the reference's PyTorch path spent most of its time there).
    grids = (2 * locations - 1).permute(0, 2, 3, 4, 1, 5)  # [B, heads, levels, points, Q, 2]
    w_ = weights.permute(0, 2, 3, 4, 1).reshape(b * heads, levels, 1, points, q)
    out = None
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)
        sampled = F.grid_sample(v, grids[:, :, lvl].flatten(0, 1), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        part = (sampled * w_[:, lvl]).sum(2)  # [B*heads, d, Q]
        out = part if out is None else out + part
    return out.view(b, heads * d, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention over ``num_levels`` flattened maps; adds its input (residual)."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 3,
                 num_points: int = 4, recompute_sampling: bool = False):
        super().__init__()
        # Keep only the sampling's inputs for backward and sample again there: its samples
        # ([B * heads, d, points, Q] per level) are the pixel decoder's largest activations.
        self.recompute_sampling = recompute_sampling
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self._reset_parameters()

    def _reset_parameters(self):
        # Deformable DETR's init: offsets start on a ring of directions, one per head.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * torch.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                shapes: List[Tuple[int, int]]) -> torch.Tensor:
        """query [B, Q, C] (also the values: self-attention), reference_points [B, Q, 2]."""
        b, q, _ = query.shape
        value = self.value_proj(query).view(b, q, self.num_heads, -1)
        x = query + query_pos
        offsets = self.sampling_offsets(x).view(b, q, self.num_heads, self.num_levels,
                                                self.num_points, 2)
        weights = self.attention_weights(x).view(b, q, self.num_heads, -1).softmax(-1)
        weights = weights.view(b, q, self.num_heads, self.num_levels, self.num_points)
        # Offsets are in pixels of each level: normalise by its (w, h).
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = (reference_points[:, :, None, None, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        if self.recompute_sampling and torch.is_grad_enabled() and not use_kernel(value):
            out = torch.utils.checkpoint.checkpoint(ms_deform_attn, value, shapes, locations,
                                                    weights, use_reentrant=False)
        else:  # (the CUDA kernel keeps only its inputs anyway)
            out = ms_deform_attn(value, shapes, locations, weights)
        return query + self.output_proj(out)
