"""ReinDet's test helpers: seeding, a miniature of the configs and fixtures building it.
Test modules import the fixtures they use from here (no conftest.py in projects/: pytest.ini
puts this project on the path)."""
import os

import pytest
import torch

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A miniature of the configs: a 4-block, 64-wide ViT, a 32-wide pyramid, small heads, 128x128
# square batches; random weights (nothing is downloaded).
REINDET_MINI = [
    "MODEL.VIT.SIZE", "small", "MODEL.VIT.EMBED_DIM", 64, "MODEL.VIT.DEPTH", 4,
    "MODEL.VIT.NUM_HEADS", 2, "MODEL.VIT.IMG_SIZE", 64,
    "MODEL.REIN.TOKEN_LENGTH", 10, "MODEL.REIN.LORA_DIM", 4,
    "MODEL.REINDET.OUT_CHANNELS", 32, "MODEL.REINDET.SQUARE_PAD", 128,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[8], [16], [32], [64], [128]],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.PRE_NMS_TOPK_TEST", 200,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 20, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "TEST.DETECTIONS_PER_IMAGE", 20, "MODEL.ROI_BOX_HEAD.NUM_CONV", 2,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 2,
    "INPUT.LSJ.IMAGE_SIZE", 128, "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 128,
    "DATALOADER.NUM_WORKERS", 0, "MODEL.DEVICE", "cpu", "MODEL.ALLOW_RANDOM_WEIGHTS", True,
]


def reindet_config_path(*parts):
    return os.path.join(PROJECT, "configs", *parts)


@pytest.fixture(autouse=True)
def _reindet_seed():
    torch.manual_seed(0)


@pytest.fixture
def reindet_mini():
    """The miniature overrides (KEY, VALUE, ...), a fresh list."""
    return list(REINDET_MINI)


@pytest.fixture
def reindet_cfg():
    """load_config(name under configs/, extra KEY VALUE overrides) with the miniature overrides."""
    from rein_d2 import load_config
    from rein_det import add_reindet_config

    def make(name="cityscapes/mask_rcnn_rein_dinov2_l.yaml", *opts):
        return load_config(reindet_config_path(*name.split("/")), REINDET_MINI + list(opts),
                           add_config=(add_reindet_config,))

    return make
