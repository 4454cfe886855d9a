"""ReinDet's detectors: both configs build, the backbone is ViTDet's pyramid on the frozen
Rein ViT, only Rein / pyramid / heads train, and bad settings are refused by name."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads

from rein_d2.engine import build_optimizer
from rein_det import ReinViTDet
from reindet_testing import _reindet_seed, reindet_cfg  # noqa: F401 (fixtures)


@pytest.mark.parametrize("name, heads", [
    ("cityscapes/mask_rcnn_rein_dinov2_l.yaml", StandardROIHeads),
    ("cityscapes/cascade_mask_rcnn_rein_dinov2_l.yaml", CascadeROIHeads),
])
def test_configs_build_a_detector_on_the_frozen_rein_vit(reindet_cfg, name, heads):
    cfg = reindet_cfg(name)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 8 and cfg.MODEL.REINDET.NORM == "LN"
    assert cfg.DATASETS.TRAIN == ("cityscapes_instance_train",)
    assert "foggy_cityscapes_0.005_instance_val" in cfg.DATASETS.TEST
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, ReinViTDet) and type(model.roi_heads) is heads
    if heads is CascadeROIHeads:
        assert len(model.roi_heads.box_head) == 3
    assert {k: (s.stride, s.channels) for k, s in backbone.output_shape().items()} == {
        "p2": (4, 32), "p3": (8, 32), "p4": (16, 32), "p5": (32, 32), "p6": (64, 32)}
    assert backbone.padding_constraints == {"size_divisibility": 32, "square_size": 128}

    names = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.vit.") for n in frozen)
    assert not any(n.startswith("backbone.vit.") for n in names)
    assert {"backbone.rein.learnable_tokens_a", "backbone.rein.learnable_tokens_b",
            "backbone.fpn.simfp_2.0.weight", "backbone.fpn.simfp_5.1.norm.weight"} <= names
    assert not any(n.startswith(("backbone.rein.transform", "backbone.rein.merge")) for n in names)

    # rein_d2's optimiser holds exactly the trainable parameters, the frozen VFM none.
    optimizer = build_optimizer(cfg, model)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}

    # A 96x120 frame is padded to the 128 square; p2 is then 32x32, p6 2x2.
    model.eval()
    image = torch.rand(3, 96, 120) * 255
    with torch.no_grad():
        features = backbone(model.preprocess_image([{"image": image}]).tensor)
        out = model([{"image": image, "height": 48, "width": 60}])[0]["instances"]
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "p2": (32, 32), "p3": (16, 16), "p4": (8, 8), "p5": (4, 4), "p6": (2, 2)}
    assert out.image_size == (48, 60) and out.pred_masks.shape[1:] == (48, 60)
    assert model.training is False and backbone.vit.training is False
    model.train()
    assert backbone.rein.training and backbone.fpn.training and not backbone.vit.training


def test_rein_refines_the_map_the_pyramid_gets(reindet_cfg):
    """The pyramid's input is refined by Rein: changing Rein's scale, then its tokens, changes
    every level."""
    backbone = build_model(reindet_cfg()).backbone.eval()
    x = torch.rand(1, 3, 64, 64) * 2
    with torch.no_grad():
        before = backbone(x)
        backbone.rein.scale.fill_(1.0)
        refined = backbone(x)
        backbone.rein.learnable_tokens_b.mul_(-3.0)
        retuned = backbone(x)
    for k in before:
        assert not torch.allclose(before[k], refined[k]) and not torch.allclose(refined[k], retuned[k])


def test_bad_settings_are_refused_by_name(reindet_cfg):
    with pytest.raises(ValueError, match="MODEL.REIN.LINK_TOKEN_TO_QUERY False"):
        build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml",
                                "MODEL.REIN.LINK_TOKEN_TO_QUERY", True))
    with pytest.raises(ValueError, match="INPUT.MAX_SIZE_TEST <= 128"):
        build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml", "INPUT.MAX_SIZE_TEST", 256))
    with pytest.raises(ValueError, match="INPUT.LSJ.IMAGE_SIZE 256 exceeds"):
        build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml", "INPUT.LSJ.IMAGE_SIZE", 256))
    with pytest.raises(ValueError, match="MODEL.VIT.NECK 'deconv'"):
        build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml", "MODEL.VIT.NECK", "deconv"))
    # Without the square, any size up to the limits works (padded to multiples of 32).
    model = build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml",
                                    "MODEL.REINDET.SQUARE_PAD", 0, "INPUT.MAX_SIZE_TEST", 256))
    assert model.backbone.padding_constraints == {"size_divisibility": 32, "square_size": 0}


def test_without_rein_only_the_pyramid_and_heads_train(reindet_cfg):
    """MODEL.REIN.ENABLED False: the frozen-VFM baseline under the same detector."""
    model = build_model(reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml", "MODEL.REIN.ENABLED", False))
    assert model.backbone.rein is None
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.fpn", "proposal_generator.rpn_head", "roi_heads.box_head",
                         "roi_heads.box_predictor", "roi_heads.mask_head"}
    model.eval()
    with torch.no_grad():
        assert set(model.backbone(torch.rand(1, 3, 64, 96))) == {"p2", "p3", "p4", "p5", "p6"}
