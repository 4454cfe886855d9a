"""ReinDet's config keys, added to a rein_d2 config by :func:`add_reindet_config`."""
from detectron2.config import CfgNode as CN

__all__ = ["add_reindet_config", "check_reindet_config"]


def add_reindet_config(cfg: CN) -> CN:
    """Add the keys of the ViTDet-style Rein backbone and of LSJ training to ``cfg`` (in place;
    rein_d2's add_rein_config must have run) and return it."""
    cfg.MODEL.REINDET = CN()
    # VFM family refined by Rein under the pyramid: dinov2, dinov3, eva02, clip, sam, mae, timm.
    cfg.MODEL.REINDET.VFM = "dinov2"
    # Width of every pyramid level p2..p6 (ViTDet: 256).
    cfg.MODEL.REINDET.OUT_CHANNELS = 256
    # Resampling of the ViT's stride-16 map into the levels (ViTDet: strides 4, 8, 16, 32).
    cfg.MODEL.REINDET.SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]
    # Norm of the pyramid's convolutions (detectron2 get_norm name; ViTDet: "LN").
    cfg.MODEL.REINDET.NORM = "LN"
    # Pad every batch to this square (ViTDet: 1024); 0 = pad to multiples of 32 only.
    cfg.MODEL.REINDET.SQUARE_PAD = 1024

    cfg.INPUT.LSJ = CN()
    # Large-scale jitter in training (ViTDet): flip, resize to IMAGE_SIZE times a random scale,
    # crop at most IMAGE_SIZE square; False = detectron2's MIN_SIZE_TRAIN / MAX_SIZE_TRAIN resize.
    cfg.INPUT.LSJ.ENABLED = True
    # Square the scales refer to and the crop size.
    cfg.INPUT.LSJ.IMAGE_SIZE = 1024
    # Range of the random scale.
    cfg.INPUT.LSJ.MIN_SCALE = 0.1
    cfg.INPUT.LSJ.MAX_SCALE = 2.0
    return cfg


def check_reindet_config(cfg: CN) -> None:
    """Refuse settings under which the square padding would cut images: detectron2 pads a
    batch to SQUARE_PAD by cropping anything larger, silently."""
    pad = cfg.MODEL.REINDET.SQUARE_PAD
    if pad <= 0:
        return
    fix = "keep images within it or set MODEL.REINDET.SQUARE_PAD 0 (pad to multiples of 32)"
    if cfg.INPUT.MIN_SIZE_TEST <= 0 or cfg.INPUT.MAX_SIZE_TEST > pad:
        raise ValueError(
            f"MODEL.REINDET.SQUARE_PAD is {pad}, but test images are resized to at most "
            f"INPUT.MAX_SIZE_TEST={cfg.INPUT.MAX_SIZE_TEST} (INPUT.MIN_SIZE_TEST="
            f"{cfg.INPUT.MIN_SIZE_TEST}; 0 = not resized): set INPUT.MAX_SIZE_TEST <= {pad}, or {fix}")
    if cfg.INPUT.LSJ.ENABLED:
        if cfg.INPUT.LSJ.IMAGE_SIZE > pad:
            raise ValueError(f"INPUT.LSJ.IMAGE_SIZE {cfg.INPUT.LSJ.IMAGE_SIZE} exceeds "
                             f"MODEL.REINDET.SQUARE_PAD {pad}: make them equal, or {fix}")
    elif cfg.INPUT.MAX_SIZE_TRAIN > pad:
        raise ValueError(f"INPUT.MAX_SIZE_TRAIN {cfg.INPUT.MAX_SIZE_TRAIN} exceeds "
                         f"MODEL.REINDET.SQUARE_PAD {pad}: set it <= {pad}, or {fix}")
