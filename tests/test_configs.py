"""Every config in configs/ loads, names registered datasets and builds the model it describes
(on the meta device: shapes and parameter counts without the memory of a ViT-H). Rein's
trainable parameter counts match docs/method.md section 3 (computed from the reference code)."""
import glob
import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import META_ARCH_REGISTRY

from rein_d2 import load_config
from conftest import REPO

CONFIGS = sorted(os.path.relpath(p, os.path.join(REPO, "configs"))
                 for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def build_on_meta(cfg):
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def rein_of(model):
    """The backbone's Rein: one module (ViTs) or the per-stage modules (CNNs)."""
    return getattr(model.backbone, "rein", None) or getattr(model.backbone, "reins", None)


def count(params):
    return sum(p.numel() for p in params)


def test_the_published_settings_are_all_there():
    for name in ["rein_dinov2.yaml", "gtav/rein_dinov2_l.yaml", "gtav/rein_dinov2_b.yaml",
                 "gtav/rein_dinov2_s.yaml", "gtav/rein_eva02_l.yaml", "gtav/rein_clip_l.yaml",
                 "gtav/rein_sam_h.yaml", "gtav/rein_mae_l.yaml", "gtav_synthia/rein_dinov2_l.yaml",
                 "cityscapes/rein_dinov2_l.yaml", "cityscapes_acdc/rein_dinov2_l_1024.yaml",
                 "gtav/baselines/dinov2_l_frozen.yaml", "gtav/baselines/dinov2_l_full_finetune.yaml",
                 "gtav/baselines/dinov2_l_lora.yaml", "gtav/baselines/dinov2_l_vpt.yaml",
                 "quickstart/synthstreets_dinov2_s.yaml", "gtav/rein_resnet50.yaml",
                 "gtav/rein_resnet101.yaml", "gtav/rein_convnext_l.yaml", "gtav/rein_dinov3_s.yaml",
                 "gtav/rein_dinov3_b.yaml", "gtav/rein_dinov3_l.yaml",
                 "gtav_synthia_urbansyn/rein_dinov2_l.yaml",
                 "gtav_synthia_urbansyn/rein_dinov2_l_cityscapes_1_16.yaml"]:
        assert name in CONFIGS, name


def test_the_urbansyn_and_one_sixteenth_settings_train_and_score_what_the_release_does():
    from rein_d2.evaluation import source_datasets

    synthetic = load_config(os.path.join(REPO, "configs", "gtav_synthia_urbansyn", "rein_dinov2_l.yaml"))
    assert synthetic.DATASETS.TRAIN == ("gtav_train", "synthia_train", "urbansyn_train")
    assert synthetic.DATASETS.TEST == ("cityscapes_rein_val", "bdd100k_sem_seg_val", "mapillary_val")
    assert source_datasets(synthetic.DATASETS.TEST, synthetic.DATASETS.TRAIN) == []
    semi = load_config(os.path.join(REPO, "configs", "gtav_synthia_urbansyn",
                                    "rein_dinov2_l_cityscapes_1_16.yaml"))
    assert semi.DATASETS.TRAIN == synthetic.DATASETS.TRAIN + ("cityscapes_rein_train_1_16",)
    assert semi.DATASETS.TEST == synthetic.DATASETS.TEST
    # Cityscapes is a training domain there: its val split is reported apart from the mean
    assert source_datasets(semi.DATASETS.TEST, semi.DATASETS.TRAIN) == ["cityscapes_rein_val"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    cfg = load_config(os.path.join(REPO, "configs", name))
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert dataset in DatasetCatalog.list(), (name, dataset)
    model = build_on_meta(cfg)
    shapes = model.backbone.output_shape()
    assert [shapes[k].stride for k in ("res2", "res3", "res4", "res5")] == [4, 8, 16, 32]
    assert model.num_classes == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    vit = model.backbone.vit
    trainable_vit = count(p for p in vit.parameters() if p.requires_grad)
    if cfg.MODEL.VIT.FREEZE and not (cfg.MODEL.VIT.LORA_RANK or cfg.MODEL.VIT.VPT_TOKENS):
        assert trainable_vit == 0, name  # the VFM itself never trains
    if cfg.MODEL.REIN.ENABLED:
        assert rein_of(model) is not None


# Trainable Rein parameters, docs/method.md section 3 (computed from the reference code).
REIN_PARAMS = {
    "gtav/rein_dinov2_l.yaml": (2_990_081, 0),
    "gtav/rein_eva02_l.yaml": (2_990_081, 0),
    "gtav/rein_clip_l.yaml": (2_990_081, 0),
    "gtav/rein_dinov2_b.yaml": (1.74e6, 0.005e6),
    "gtav/rein_dinov2_s.yaml": (0.68e6, 0.005e6),
    "gtav/rein_sam_h.yaml": (3.89e6, 0.005e6),
    # DINOv3 (after the paper): Rein's formula at the DINOv2 widths and depths
    "gtav/rein_dinov3_s.yaml": (684_033, 0),
    "gtav/rein_dinov3_b.yaml": (1_741_569, 0),
    "gtav/rein_dinov3_l.yaml": (2_990_081, 0),
    # CNNs: one Rein per stage (m 100, r 16; README "Backbones"), the sum over the four stages
    "gtav/rein_resnet50.yaml": (13_187_588, 0),
    "gtav/rein_resnet101.yaml": (13_493_316, 0),
    "gtav/rein_convnext_l.yaml": (8_289_156, 0),
}


@pytest.mark.parametrize("name", sorted(REIN_PARAMS))
def test_rein_parameter_counts_match_the_reference(name):
    model = build_on_meta(load_config(os.path.join(REPO, "configs", name)))
    expected, tol = REIN_PARAMS[name]
    n = count(rein_of(model).parameters())
    print(f"{name}: {n:,} trainable Rein parameters")
    assert abs(n - expected) <= tol, name


def test_baselines_train_what_the_paper_compares():
    def trainable_backbone(name):
        model = build_on_meta(load_config(os.path.join(REPO, "configs", "gtav", "baselines", name)))
        assert model.backbone.rein is None  # baselines replace Rein
        return model, count(p for p in model.backbone.parameters() if p.requires_grad)

    _, frozen = trainable_backbone("dinov2_l_frozen.yaml")
    assert frozen == 0
    full, n = trainable_backbone("dinov2_l_full_finetune.yaml")
    assert n == count(full.backbone.vit.parameters()) > 300e6  # every DINOv2-L weight
    _, lora = trainable_backbone("dinov2_l_lora.yaml")
    assert lora == 24 * 16 * (1024 + 3 * 1024)  # rank 16 on the fused qkv of 24 blocks
    _, vpt = trainable_backbone("dinov2_l_vpt.yaml")
    assert vpt == 24 * 150 * 1024  # 150 prompts per block
