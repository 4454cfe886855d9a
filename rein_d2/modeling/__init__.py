from .backbone import ReinViT, build_rein_vit  # registers the backbones
from .rein import Rein

__all__ = ["Rein", "ReinViT", "build_rein_vit"]
