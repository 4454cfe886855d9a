"""Rein's frozen VFM as the backbone of detectron2's detectors, the ViTDet way: the last
block's stride-16 map becomes p2..p6 through detectron2's SimpleFeaturePyramid."""
from typing import Dict

import torch
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid

from rein_d2.modeling.backbone.build import build_rein_vit
from rein_d2.modeling.backbone.vit_rein import ReinViT

from .config import check_reindet_config

__all__ = ["ReinViTDet", "ReinSimpleFeaturePyramid"]


class _LastFeature(Backbone):
    """The net SimpleFeaturePyramid is built on, standing for the ViT: it hands on the map the
    ViT already computed. (The ViT itself stays a ReinViT so that the frozen VFM keeps its
    state-dict prefix ``backbone.vit.``, which rein_d2's converted weights, light checkpoints
    and optimiser rely on.)"""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self._shape = ShapeSpec(channels=channels, stride=stride)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"last_feat": x}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {"last_feat": self._shape}


class ReinViTDet(ReinViT):
    """A frozen ViT refined by Rein after every block, whose last output block's patch tokens
    (stride = patch size, 16) feed ViTDet's SimpleFeaturePyramid (``self.fpn``): outputs p2..p6.

    Rein's tokens have no query link here (the detectors have no query decoder); they refine
    the features block by block, as in segmentation.

    Args:
        out_channels, scale_factors, norm: those of SimpleFeaturePyramid.
        square_pad: pad every batch to this square (0: to multiples of 32 only).
        **vit_kwargs: those of :class:`ReinViT`.
    """

    def __init__(self, *, out_channels: int = 256, scale_factors=(4.0, 2.0, 1.0, 0.5),
                 norm: str = "LN", square_pad: int = 0, **vit_kwargs):
        super().__init__(**vit_kwargs)
        if self.rein is not None and self.rein.link_token_to_query:
            raise ValueError("a detector has no query decoder to link Rein's tokens to: set "
                             "MODEL.REIN.LINK_TOKEN_TO_QUERY False")
        if self.neck_type != "resize":
            raise ValueError(f"MODEL.VIT.NECK {self.neck_type!r}: the simple feature pyramid is "
                             "this backbone's neck; leave MODEL.VIT.NECK at 'resize'")
        self.fpn = SimpleFeaturePyramid(
            _LastFeature(self.embed_dim, self.patch_size), "last_feat", out_channels,
            list(scale_factors), top_block=LastLevelMaxPool(), norm=norm, square_pad=square_pad)
        self.square_pad = square_pad
        # The pyramid's outputs are this backbone's. (Its padding constraints are stated below:
        # SimpleFeaturePyramid's own misspell "size_divisibility", which pads to no multiple.)
        self._out_features = list(self.fpn._out_features)
        self._out_feature_strides = dict(self.fpn._out_feature_strides)
        self._out_feature_channels = dict(self.fpn._out_feature_channels)

    @property
    def size_divisibility(self) -> int:
        # The coarsest resampled level (p5 at 0.5x of stride 16): exact strides for p2..p5.
        return int(self.patch_size / min(self.fpn.scale_factors))

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self.size_divisibility, "square_size": self.square_pad}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.size_divisibility or w % self.size_divisibility:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.size_divisibility}; "
                             "detectron2's models pad to backbone.padding_constraints")
        maps = self._forward_sam(x) if self.family == "sam" else self._forward_tokens(x)
        return self.fpn(maps[-1])  # the last of MODEL.VIT.OUT_INDICES (default: the last block)


# MODEL.BACKBONE.NAME; MODEL.REINDET.VFM picks the ViT family and MODEL.VIT.SIZE its size.
@BACKBONE_REGISTRY.register()
def ReinSimpleFeaturePyramid(cfg, input_shape=None) -> ReinViTDet:
    """The Rein ViT of MODEL.VIT / MODEL.REIN with ViTDet's pyramid of MODEL.REINDET."""
    check_reindet_config(cfg)
    d = cfg.MODEL.REINDET
    return build_rein_vit(cfg, d.VFM, cls=ReinViTDet, out_channels=d.OUT_CHANNELS,
                          scale_factors=tuple(d.SCALE_FACTORS), norm=d.NORM,
                          square_pad=d.SQUARE_PAD)
