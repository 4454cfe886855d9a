"""rein_d2: Rein (CVPR 2024) for domain-generalized semantic segmentation in detectron2.

Importing the package registers its backbones, its meta-architecture and its datasets.
"""
from .config import add_rein_config, load_config
from . import modeling  # noqa: F401  (registration on import)
from . import data  # noqa: F401

__all__ = ["add_rein_config", "load_config"]
