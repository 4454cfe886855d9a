"""Normalised sine position encoding of a feature map (DETR / Mask2Former style)."""
import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """[B, 2 * num_feats, H, W] encoding: y then x, each sin/cos interleaved per frequency."""

    def __init__(self, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi,
                 eps: float = 1e-6):
        super().__init__()
        self.num_feats, self.temperature, self.scale, self.eps = num_feats, temperature, scale, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ones = torch.ones(b, h, w, device=x.device, dtype=torch.float32)
        y = ones.cumsum(1)
        xx = ones.cumsum(2)
        y = y / (y[:, -1:, :] + self.eps) * self.scale
        xx = xx / (xx[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_feats)
        pos_x, pos_y = xx[..., None] / dim_t, y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)
