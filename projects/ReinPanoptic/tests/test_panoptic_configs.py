"""Every ReinPanoptic config loads through rein_d2.load_config, describes the setting it is
named for (Mask2Former's Cityscapes panoptic / instance input pipeline on Rein's DINOv2-L),
builds its model at full size (on the meta device) and, in miniature, gives the outputs its
MODEL.MASK2FORMER.TEST flags ask for."""
import glob
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from panoptic_testing import CONFIGS, PANOPTIC_META, SETTINGS, load_cfg
from rein_d2 import load_config
from rein_d2.evaluation import INSTANCE_KINDS, PANOPTIC_KINDS

PANOPTIC = {"mapper": "panoptic", "classes": 19, "outputs": {"sem_seg", "instances", "panoptic_seg"}}
INSTANCE = {"mapper": "instance", "classes": 8, "outputs": {"instances"}}


def expected(setting):
    return PANOPTIC if "/panoptic_" in setting else INSTANCE


def test_every_setting_has_its_config():
    found = sorted(os.path.relpath(p, CONFIGS) for p in glob.glob(os.path.join(CONFIGS, "*", "*.yaml")))
    assert found == sorted(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS)
def test_config_describes_its_setting_and_builds_at_full_size(setting):
    cfg = load_config(os.path.join(CONFIGS, setting))
    want = expected(setting)
    assert cfg.INPUT.DATASET_MAPPER_NAME == want["mapper"]
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == want["classes"]
    test = cfg.MODEL.MASK2FORMER.TEST
    flags = {"sem_seg": test.SEMANTIC_ON, "instances": test.INSTANCE_ON, "panoptic_seg": test.PANOPTIC_ON}
    assert {k for k, on in flags.items() if on} == want["outputs"]
    assert test.MODE == "whole"  # instance and panoptic outputs need the whole image
    assert list(cfg.INPUT.CROP.SIZE) == [512, 1024] and cfg.INPUT.MIN_SIZE_TEST == 1024
    assert (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.VIT.SIZE) == ("ReinDINOv2", "large")
    assert cfg.MODEL.REIN.LINK_TOKEN_TO_QUERY
    assert cfg.MODEL.REIN.TOKEN_LENGTH == cfg.MODEL.MASK2FORMER.NUM_QUERIES == 100
    assert cfg.DATASETS.TRAIN[0].startswith("synthia" if setting.startswith("synthia") else "cityscapes")
    assert len(cfg.DATASETS.TEST) >= 2
    with torch.device("meta"):  # DINOv2-L's shapes without its memory
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert model.num_classes == want["classes"]
    assert model.backbone.linked_queries() is not None  # Rein's tokens are the decoder's queries
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())  # the VFM is frozen
    assert model.backbone.rein.learnable_tokens_a.shape[1] == 100


@pytest.mark.parametrize("setting", SETTINGS)
def test_miniature_model_gives_the_outputs_of_its_flags(setting):
    torch.manual_seed(0)
    model = build_model(load_cfg(setting, "MODEL.DEVICE", "cpu")).eval()
    # the thing ids panoptic inference needs (the training set's metadata, registered by
    # rein_panoptic; here detectron2's Cityscapes panoptic layout)
    model.metadata = Metadata(name="cityscapes_like", **PANOPTIC_META)
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192}])[0]
    assert set(out) == expected(setting)["outputs"]
    instances = out["instances"]
    assert instances.image_size == (128, 192) and instances.pred_masks.shape[1:] == (128, 192)
    classes = instances.pred_classes
    if "panoptic_seg" in out:
        assert out["sem_seg"].shape == (19, 128, 192)
        assert bool(((classes >= 11) & (classes <= 18)).all())  # things only
        seg, info = out["panoptic_seg"]
        assert seg.shape == (128, 192)
        assert sorted(s["id"] for s in info) == sorted(set(seg.unique().tolist()) - {0})
    else:
        assert bool(((classes >= 0) & (classes < 8)).all())


def test_the_configs_name_registered_datasets_of_one_label_space():
    pytest.importorskip("rein_panoptic", reason="the datasets are registered by rein_panoptic")
    for setting in SETTINGS:
        cfg = load_config(os.path.join(CONFIGS, setting))
        kinds = PANOPTIC_KINDS if expected(setting) is PANOPTIC else INSTANCE_KINDS
        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
            assert name in DatasetCatalog.list(), (setting, name)
            assert MetadataCatalog.get(name).get("evaluator_type", None) in kinds, (setting, name)
        if expected(setting) is PANOPTIC:  # panoptic inference reads the training set's things
            meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
            assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(11, 19))
