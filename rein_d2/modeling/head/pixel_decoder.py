"""Mask2Former's pixel decoder: a deformable-attention encoder over the coarsest levels plus
a lateral (FPN) path down to stride 4 for the mask features.

Module and parameter names follow the reference (mmdet's MSDeformAttnPixelDecoder) so that a
released head converts by a prefix change.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import MSDeformAttn
from .position_encoding import SinePositionEncoding


class ConvGN(nn.Module):
    """Conv2d + GroupNorm(32) (+ optional ReLU)."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.gn = nn.GroupNorm(32, cout)
        self.relu = relu
        nn.init.xavier_uniform_(self.conv.weight)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class FFN(nn.Module):
    """Linear-ReLU-Linear with a residual (names as mmcv's FFN: layers.0.0, layers.1)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True)),
                                    nn.Linear(hidden, dim))

    def forward(self, x):
        return x + self.layers(x)


class DeformEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, norm, FFN, norm."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn_dim: int,
                 recompute_sampling: bool = False):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, heads, levels, points, recompute_sampling)
        self.ffn = FFN(dim, ffn_dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])

    def forward(self, x, pos, reference_points, shapes):
        x = self.norms[0](self.self_attn(x, pos, reference_points, shapes))
        return self.norms[1](self.ffn(x))


class DeformEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([DeformEncoderLayer(**layer_kwargs) for _ in range(num_layers)])

    def forward(self, x, pos, reference_points, shapes):
        for layer in self.layers:
            x = layer(x, pos, reference_points, shapes)
        return x


class MSDeformAttnPixelDecoder(nn.Module):
    """Input: 4 maps, strides 4..32. Output: (mask features at stride 4, [the encoder's 3
    maps, coarsest first])."""

    def __init__(self, *, in_channels: List[int], strides: List[int], feat_channels: int = 256,
                 out_channels: int = 256, num_encoder_levels: int = 3, num_layers: int = 6,
                 num_heads: int = 8, num_points: int = 4, ffn_dim: int = 1024,
                 recompute_sampling: bool = False):
        super().__init__()
        self.strides = list(strides)
        self.num_input_levels = len(in_channels)
        self.num_encoder_levels = num_encoder_levels
        # input_convs[0] projects the coarsest map.
        self.input_convs = nn.ModuleList([
            ConvGN(in_channels[i], feat_channels, 1, bias=True, relu=False)
            for i in range(self.num_input_levels - 1, self.num_input_levels - num_encoder_levels - 1, -1)
        ])
        self.encoder = DeformEncoder(num_layers, dim=feat_channels, heads=num_heads,
                                     levels=num_encoder_levels, points=num_points, ffn_dim=ffn_dim,
                                     recompute_sampling=recompute_sampling)
        self.position_encoding = SinePositionEncoding(feat_channels // 2)
        self.level_encoding = nn.Embedding(num_encoder_levels, feat_channels)
        n_lateral = self.num_input_levels - num_encoder_levels
        self.lateral_convs = nn.ModuleList([
            ConvGN(in_channels[i], feat_channels, 1, bias=False, relu=False) for i in range(n_lateral)])
        self.output_convs = nn.ModuleList([
            ConvGN(feat_channels, feat_channels, 3, bias=False, relu=True) for _ in range(n_lateral)])
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)
        nn.init.normal_(self.level_encoding.weight)
        nn.init.xavier_uniform_(self.mask_feature.weight)
        nn.init.zeros_(self.mask_feature.bias)

    @staticmethod
    def _reference_points(h: int, w: int, device, dtype) -> torch.Tensor:
        # Pixel centres, normalised to [0, 1], x first.
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)

    def forward(self, feats: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        b = feats[0].shape[0]
        tokens, pos, refs, shapes = [], [], [], []
        for i in range(self.num_encoder_levels):
            feat = feats[self.num_input_levels - i - 1]
            h, w = feat.shape[-2:]
            proj = self.input_convs[i](feat)
            level_pos = self.position_encoding(proj) + self.level_encoding.weight[i].view(1, -1, 1, 1)
            tokens.append(proj.flatten(2).transpose(1, 2))
            pos.append(level_pos.flatten(2).transpose(1, 2))
            refs.append(self._reference_points(h, w, feat.device, proj.dtype))
            shapes.append((h, w))
        memory = self.encoder(torch.cat(tokens, 1), torch.cat(pos, 1),
                              torch.cat(refs, 0).unsqueeze(0).expand(b, -1, -1), shapes)
        outs = [m.transpose(1, 2).reshape(b, -1, h, w)
                for m, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)]
        # Lateral path towards stride 4, from the finest encoder level.
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear",
                                        align_corners=False)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[: self.num_encoder_levels]
