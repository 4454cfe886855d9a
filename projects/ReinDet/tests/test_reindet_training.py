"""Training a miniature Rein Mask R-CNN through rein_d2's ReinTrainer on a tiny COCO-format
instance set: the loss falls, the frozen VFM does not move, Rein's tokens do, checkpoints
leave the VFM out, and the test sets are scored by COCOEvaluator."""
import json
import math
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser
from PIL import Image

from rein_d2 import load_config
from rein_d2.engine import ReinTrainer
from rein_d2.utils.cli import UserError
from rein_det import add_reindet_config
from rein_det.tools import train_net  # what projects/ReinDet/train_net.py runs
from reindet_testing import _reindet_seed, reindet_cfg, reindet_mini  # noqa: F401 (fixtures)

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_instances(tmp_path_factory):
    """One 96x128 frame with three objects of two classes, as COCO json twice: with polygons
    (name "<n>_poly") and with RLE masks (name "<n>_rle"; cropping polygons, as large-scale
    jitter does, needs shapely, which this environment lacks)."""
    root = tmp_path_factory.mktemp("reindet_coco")
    rng = np.random.default_rng(0)
    image = np.full((96, 128, 3), 90, np.uint8)
    boxes = [(8, 10, 40, 50, 1), (60, 20, 110, 60, 2), (20, 62, 70, 90, 1)]  # x0, y0, x1, y1, class
    polygons, rles = [], []
    for i, (x0, y0, x1, y1, c) in enumerate(boxes):
        image[y0:y1, x0:x1] = (220, 40, 40) if c == 1 else (40, 200, 60)
        ann = {"id": i + 1, "image_id": 1, "category_id": c, "iscrowd": 0,
               "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
        polygons.append(dict(ann, segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]]))
        mask = np.zeros((96, 128), np.uint8, order="F")
        mask[y0:y1, x0:x1] = 1
        rle = mask_util.encode(mask)
        rles.append(dict(ann, segmentation={"size": rle["size"], "counts": rle["counts"].decode()}))
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(root / "frame.png")
    name = f"reindet_tiny_{uuid.uuid4().hex[:6]}"
    for kind, anns in (("poly", polygons), ("rle", rles)):
        coco = {"images": [{"id": 1, "file_name": "frame.png", "height": 96, "width": 128}],
                "annotations": anns, "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
        (root / f"{kind}.json").write_text(json.dumps(coco))
        register_coco_instances(f"{name}_{kind}", {}, str(root / f"{kind}.json"), str(root))
    return name


def test_training_steps_lower_the_loss_and_train_only_rein_and_the_detector(
        reindet_cfg, tiny_instances, tmp_path):
    cfg = reindet_cfg(
        "cityscapes/mask_rcnn_rein_dinov2_l.yaml",
        "DATASETS.TRAIN", (tiny_instances + "_poly",), "DATASETS.TEST", (),
        "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        # the same frame every step, no jitter: the loss can only fall
        "INPUT.LSJ.ENABLED", False, "INPUT.RANDOM_FLIP", "none",
        "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 128,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 2e-3, "SOLVER.MAX_ITER", 24,
        "SOLVER.STEPS", (), "SOLVER.WARMUP_ITERS", 0, "SOLVER.CHECKPOINT_PERIOD", 100,
        "TEST.EVAL_PERIOD", 0, "SEED", 3, "OUTPUT_DIR", str(tmp_path))
    torch.manual_seed(cfg.SEED)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model
    vfm = {k: v.clone() for k, v in model.backbone.vit.state_dict().items()}
    tokens = model.backbone.rein.learnable_tokens_b.detach().clone()
    pyramid = model.backbone.fpn.simfp_4[0].weight.detach().clone()
    trainer.train()

    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:3])  # measured: 1.36 against 2.43
    for k, v in model.backbone.vit.state_dict().items():
        assert torch.equal(v, vfm[k]), k
    assert not torch.equal(model.backbone.rein.learnable_tokens_b, tokens)
    assert not torch.equal(model.backbone.fpn.simfp_4[0].weight, pyramid)

    # rein_d2's light checkpoint: everything trained, nothing of the frozen VFM.
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert not any(k.startswith("backbone.vit.") for k in saved)
    assert {"backbone.rein.learnable_tokens_a", "backbone.fpn.simfp_2.0.weight",
            "roi_heads.mask_head.predictor.weight"} <= set(saved)

    # The test sets go through the "detection" mapper and detectron2's COCOEvaluator.
    cfg.DATASETS.TEST = (tiny_instances + "_poly",)
    results = ReinTrainer.test(cfg, model)[tiny_instances + "_poly"]  # per target, DG evaluation
    assert {"AP", "box_AP"} <= set(results)
    assert all(math.isfinite(results[t]) for t in ("AP", "box_AP"))



def test_train_net_trains_then_evaluates_its_last_checkpoint(reindet_mini, tiny_instances, tmp_path):
    config = os.path.join(PROJECT, "configs", "cityscapes", "cascade_mask_rcnn_rein_dinov2_l.yaml")
    opts = reindet_mini + [
        "DATASETS.TRAIN", (tiny_instances + "_rle",), "DATASETS.TEST", (tiny_instances + "_rle",),
        "MODEL.ROI_HEADS.NUM_CLASSES", 2, "SOLVER.IMS_PER_BATCH", 1,
        "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (), "SOLVER.WARMUP_ITERS", 0, "OUTPUT_DIR", str(tmp_path)]
    opts = [str(o) for o in opts]  # as typed on a command line

    def parse(argv):
        return default_argument_parser().parse_args(argv)

    assert train_net.main(parse(["--config-file", config, *opts])) is None  # trained, evaluated
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "config.yaml").is_file()
    results = train_net.main(parse(["--config-file", config, "--eval-only", "--resume", *opts]))
    assert {"AP", "box_AP"} <= set(next(iter(results.values())))  # the test set's box and mask AP

    # A test set nobody registered stops the run before anything is built, naming it.
    with pytest.raises(SystemExit) as e:
        train_net.main(parse(["--config-file", config, *opts, "DATASETS.TEST", "('no_such_instance_val',)"]))
    assert e.value.code == 2
    if train_net.PANOPTIC_ERROR is None:  # projects/ReinPanoptic is there: the name is known
        return
    with pytest.raises(UserError, match="bdd100k_instance_val.*rein_panoptic.*DATASETS.TEST"):
        train_net.check_datasets(load_config(config, opts + ["DATASETS.TEST", "('bdd100k_instance_val',)"],
                                             add_config=(add_reindet_config,)))
