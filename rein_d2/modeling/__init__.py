from .backbone import ReinViT, build_rein_vit  # registers the backbones
from .meta_arch import ReinMask2Former  # registers the meta-architecture
from .rein import Rein
from .test_time_augmentation import SemanticSegmentorWithTTA

__all__ = ["Rein", "ReinMask2Former", "ReinViT", "SemanticSegmentorWithTTA", "build_rein_vit"]
