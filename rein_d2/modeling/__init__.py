from .backbone import ReinViT, build_rein_vit  # registers the backbones
from .meta_arch import ReinMask2Former  # registers the meta-architecture
from .rein import Rein

__all__ = ["Rein", "ReinMask2Former", "ReinViT", "build_rein_vit"]
