from .build import build_rein_vit, rein_kwargs_from_cfg
from .vit_rein import VFM_ARCHS, ReinViT, VFMArch, default_out_indices

__all__ = ["build_rein_vit", "rein_kwargs_from_cfg", "VFM_ARCHS", "ReinViT", "VFMArch",
           "default_out_indices"]
