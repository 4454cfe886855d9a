"""Registration of the Rein ViT backbones in detectron2's BACKBONE_REGISTRY."""
from detectron2.modeling import BACKBONE_REGISTRY

from .cnn_rein import CNN_ARCHS, ReinCNN
from .vit_rein import VFM_ARCHS, ReinViT, timm_vit_arch
from ...utils.cli import UserError

__all__ = ["build_rein_cnn", "build_rein_vit", "rein_kwargs_from_cfg"]


def rein_kwargs_from_cfg(cfg):
    """Rein's keyword arguments from MODEL.REIN, or None when Rein is disabled."""
    r = cfg.MODEL.REIN
    if not r.ENABLED:
        return None
    return dict(
        token_length=r.TOKEN_LENGTH, lora_dim=r.LORA_DIM, query_dim=r.QUERY_DIM,
        link_token_to_query=r.LINK_TOKEN_TO_QUERY, use_softmax=r.USE_SOFTMAX,
        scale_init=r.SCALE_INIT, zero_mlp_delta_f=r.ZERO_MLP_DELTA_F,
    )


def build_rein_vit(cfg, family: str, cls=ReinViT, **extra) -> ReinViT:
    """The ViT of MODEL.VIT / MODEL.REIN as ``cls`` (ReinViT or a subclass, which also gets the
    keyword arguments ``extra``)."""
    v = cfg.MODEL.VIT
    if family == "timm":
        arch = timm_vit_arch(v.TIMM_NAME)
    else:
        size = v.SIZE + (f"_reg{v.NUM_REGISTERS}" if v.NUM_REGISTERS else "")
        if (family, size) not in VFM_ARCHS:
            known = sorted({s.split("_reg")[0] for f, s in VFM_ARCHS if f == family})  # (registers: NUM_REGISTERS)
            raise UserError(
                f"no {family} model of size {size!r} (MODEL.VIT.SIZE={v.SIZE!r}, "
                f"MODEL.VIT.NUM_REGISTERS={v.NUM_REGISTERS}); set MODEL.VIT.SIZE to one of: "
                f"{', '.join(known)}")
        arch = VFM_ARCHS[(family, size)]
    return cls(
        arch=arch, img_size=v.IMG_SIZE, patch_size=v.PATCH_SIZE,
        out_indices=v.OUT_INDICES or None, rein=rein_kwargs_from_cfg(cfg), freeze=v.FREEZE,
        neck=v.NECK, timm_overrides={k: n for k, n in (("embed_dim", v.EMBED_DIM),
                                     ("depth", v.DEPTH), ("num_heads", v.NUM_HEADS)) if n},
        lora_rank=v.LORA_RANK, lora_alpha=v.LORA_ALPHA, vpt_tokens=v.VPT_TOKENS,
        checkpoint_blocks=v.CHECKPOINT_BLOCKS, **extra,
    )


# Registered names are what MODEL.BACKBONE.NAME takes; MODEL.VIT.SIZE picks the size.
@BACKBONE_REGISTRY.register()
def ReinDINOv2(cfg, input_shape=None):
    """DINOv2 ViT-S/B/L/G (MODEL.VIT.NUM_REGISTERS=4: the "with registers" models)."""
    return build_rein_vit(cfg, "dinov2")


@BACKBONE_REGISTRY.register()
def ReinDINOv3(cfg, input_shape=None):
    """DINOv3 ViT-S/S+/B/L/H+/7B (patch 16, rotary positions, 4 register tokens)."""
    return build_rein_vit(cfg, "dinov3")


@BACKBONE_REGISTRY.register()
def ReinEVA02(cfg, input_shape=None):
    """EVA02-L (MIM-pretrained, rotary position embedding)."""
    return build_rein_vit(cfg, "eva02")


@BACKBONE_REGISTRY.register()
def ReinCLIP(cfg, input_shape=None):
    """OpenAI CLIP ViT-L/14 image tower."""
    return build_rein_vit(cfg, "clip")


@BACKBONE_REGISTRY.register()
def ReinSAM(cfg, input_shape=None):
    """Segment-Anything ViT-B/L/H image encoder; Rein after its global-attention blocks."""
    return build_rein_vit(cfg, "sam")


@BACKBONE_REGISTRY.register()
def ReinMAE(cfg, input_shape=None):
    """MAE-pretrained ViT-L/16."""
    return build_rein_vit(cfg, "mae")


@BACKBONE_REGISTRY.register()
def ReinTimmViT(cfg, input_shape=None):
    """Any timm ViT of the VisionTransformer or Eva design, by name (MODEL.VIT.TIMM_NAME)."""
    return build_rein_vit(cfg, "timm")


def build_rein_cnn(cfg, family: str) -> ReinCNN:
    size = cfg.MODEL.CNN.SIZE
    if (family, size) not in CNN_ARCHS:
        known = sorted(s for f, s in CNN_ARCHS if f == family)
        raise UserError(f"no {family} model of size {size!r} (MODEL.CNN.SIZE); set MODEL.CNN.SIZE to "
                        f"one of: {', '.join(known)}")
    return ReinCNN(arch=CNN_ARCHS[(family, size)], rein=rein_kwargs_from_cfg(cfg),
                   freeze=cfg.MODEL.VIT.FREEZE, depths=cfg.MODEL.CNN.DEPTHS or None)


@BACKBONE_REGISTRY.register()
def ReinResNet(cfg, input_shape=None):
    """ResNet-50/101 with the deep V1c stem (MODEL.CNN.SIZE "r50" / "r101"), one Rein per stage."""
    return build_rein_cnn(cfg, "resnet")


@BACKBONE_REGISTRY.register()
def ReinConvNeXt(cfg, input_shape=None):
    """ConvNeXt-L (MODEL.CNN.SIZE "large"), one Rein per stage."""
    return build_rein_cnn(cfg, "convnext")
