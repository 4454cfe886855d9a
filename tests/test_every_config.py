"""Every config under configs/ and projects/*/configs/ trains one iteration and evaluates every
DATASETS.TEST target, as a user runs it (ReinTrainer: build, train, the DG evaluation after the
last iteration), on miniature data: each dataset written in its official layout (the writers of
the dataset tests) and converted by its own preparation script.

The overrides only shrink, everything by the same factor 1/8 where it is a size: the model
(widths, depths, tokens, queries), the input and crop sizes, the sliding window, the data
(32x64 frames; each target's evaluation size, a dataset property, scaled with them) and the
schedule (one iteration, batch 2). No data-format, mapper, mode or evaluator key is touched:
test_overrides_only_shrink checks the list against SHRINK_KEYS."""
import glob
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from conftest import REPO
from rein_d2 import load_config
from rein_d2.data.datasets.common import datasets_root
from rein_panoptic.data import register_all
from test_datasets import _script as core_script


def _module(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the official-layout writers of ReinPanoptic's dataset tests
pan = _module(os.path.join(REPO, "projects", "ReinPanoptic", "tests", "test_panoptic_datasets.py"))

CONFIGS = sorted(os.path.relpath(p, REPO) for p in
                 glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 + glob.glob(os.path.join(REPO, "projects", "*", "configs", "**", "*.yaml"), recursive=True))
SCALE = 8  # every size of a config (input, crop, window, position grid, evaluation size) / 8
# Keys the test may set: sizes of the model, input, crop and window; the schedule; where the
# run writes; random weights (no VFM file offline); workers (2 idle cores).
SHRINK_KEYS = {
    "MODEL.VIT.EMBED_DIM", "MODEL.VIT.DEPTH", "MODEL.VIT.NUM_HEADS", "MODEL.VIT.IMG_SIZE",
    "MODEL.VIT.VPT_TOKENS", "MODEL.VIT.LORA_RANK", "MODEL.CNN.DEPTHS",
    "MODEL.REIN.TOKEN_LENGTH", "MODEL.REIN.LORA_DIM", "MODEL.REIN.QUERY_DIM",
    "MODEL.MASK2FORMER.HIDDEN_DIM", "MODEL.MASK2FORMER.NUM_QUERIES", "MODEL.MASK2FORMER.NHEADS",
    "MODEL.MASK2FORMER.DEC_LAYERS", "MODEL.MASK2FORMER.DIM_FEEDFORWARD",
    "MODEL.MASK2FORMER.ENC_LAYERS", "MODEL.MASK2FORMER.ENC_DIM_FEEDFORWARD",
    "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", "MODEL.MASK2FORMER.TEST.CROP_SIZE",
    "MODEL.MASK2FORMER.TEST.STRIDE",
    "MODEL.REINDET.OUT_CHANNELS", "MODEL.REINDET.SQUARE_PAD", "MODEL.ANCHOR_GENERATOR.SIZES",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "MODEL.ROI_BOX_HEAD.NUM_CONV", "MODEL.ROI_BOX_HEAD.CONV_DIM", "MODEL.ROI_BOX_HEAD.FC_DIM",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "MODEL.ROI_MASK_HEAD.NUM_CONV", "TEST.DETECTIONS_PER_IMAGE",
    "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "INPUT.CROP.SIZE", "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST", "INPUT.LSJ.IMAGE_SIZE",
    "SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD",
    "DATALOADER.NUM_WORKERS", "MODEL.DEVICE", "MODEL.ALLOW_RANDOM_WEIGHTS", "OUTPUT_DIR",
}
# The label writers of the semantic sets (beside the panoptic writers' raw trees).
LABEL_IDS = {"sky": 23, "road_a": 7, "road_b": 7, "car_1": 26, "car_2": 26, "crowd": 24,
             "unmapped": 4, "building": 11}
TRAIN_IDS = {"sky": 10, "road_a": 0, "road_b": 0, "car_1": 13, "car_2": 13, "crowd": 11, "building": 2}
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def _write_semantic_extras(root):
    """The semantic label trees the panoptic writers do not write: GTAV's palette label ids,
    UrbanSyn's train ids, BDD100K's sem_seg masks, ACDC's gt train ids, Mapillary's v1.2 label indices and Foggy
    Cityscapes' images (and the gtFine polygons json that detectron2 lists frames by)."""
    pan._image(os.path.join(root, "gta", "images", "00000.png"))
    label = Image.fromarray(pan._paint(LABEL_IDS).astype(np.uint8), mode="P")
    label.putpalette(list(np.random.RandomState(0).randint(0, 255, 768)))
    os.makedirs(os.path.join(root, "gta", "labels"))
    label.save(os.path.join(root, "gta", "labels", "00000.png"))
    train_ids = pan._paint(TRAIN_IDS).astype(np.uint8)
    train_ids[pan._mask("unmapped") | ~pan._mask(*TRAIN_IDS, "unmapped")] = 255
    urbansyn = np.where(train_ids == 255, 19, train_ids).astype(np.uint8)  # UrbanSyn: 19 = unlabelled
    pan._image(os.path.join(root, "urbansyn", "rgb", "rgb_0001.png"))
    pan._save(os.path.join(root, "urbansyn", "ss", "ss_0001.png"), urbansyn)
    for split in ("train", "val"):
        pan._save(os.path.join(root, "bdd100k", "labels", "sem_seg", "masks", split,
                               "7d2f7975-e0c1c5a7.png"), train_ids)
        for cond in ACDC_CONDITIONS:
            stem = f"GOPR0475_frame_000041_{cond}"
            pan._save(os.path.join(root, "acdc", "gt", cond, split, "GOPR0475",
                                   f"{stem}_gt_labelTrainIds.png"), train_ids)
    names = ["Sky", "Road", "Car", "Person", "Building", "Bird"]
    with open(os.path.join(root, "mapillary", "config_v1.2.json"), "w") as f:
        json.dump({"labels": [{"readable": n, "name": n.lower()} for n in names]}, f)
    index = pan._paint({"sky": 0, "road_a": 1, "road_b": 1, "car_1": 2, "car_2": 2, "crowd": 3,
                        "unmapped": 5, "building": 4}).astype(np.uint8)
    for folder in ("training", "validation"):
        image = Image.fromarray(index, mode="P")
        image.putpalette(list(range(256)) * 3)
        os.makedirs(os.path.join(root, "mapillary", folder, "v1.2", "labels"))
        image.save(os.path.join(root, "mapillary", folder, "v1.2", "labels", "k3y_-0.png"))
    city = os.path.join(root, "cityscapes")
    for split in ("train", "val"):
        stem = "aachen/aachen_000000_000019"
        with open(os.path.join(city, "gtFine", split, f"{stem}_gtFine_polygons.json"), "w") as f:
            f.write('{"imgHeight": %d, "imgWidth": %d, "objects": []}' % (pan.H, pan.W))
        for beta in ("0.02", "0.01", "0.005"):
            pan._image(os.path.join(city, "leftImg8bit_foggy", split, f"{stem}_leftImg8bit_foggy_beta_{beta}.png"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these models are too small to gain from two, and on a busy machine
    a second thread's spin-waits cost 5x (measured: 167 s against 29 s of CPU time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """One $DETECTRON2_DATASETS with every dataset the configs name, prepared by its scripts;
    synthstreets registered at 2 + 1 + 1 frames of 32x64; each target's evaluation size / 8."""
    root = str(tmp_path_factory.mktemp("every_config_datasets"))
    before = datasets_root()
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", root)
    for split in ("train", "val"):
        pan._write_cityscapes(root, split)
        pan._write_bdd(root, split)
        for cond in ACDC_CONDITIONS:
            pan._write_acdc(root, cond, split)
    for folder in ("training", "validation"):
        pan._write_mapillary(root, folder, "v1.2/panoptic")
    pan._write_synthia(root)
    _write_semantic_extras(root)
    args = ["--root", root, "--no-count-check", "--workers", "1"]
    for name in ("gtav", "cityscapes", "synthia", "urbansyn", "bdd100k", "mapillary", "acdc"):
        assert core_script(f"prepare_{name}").main(args) == 0, name
    for name in ("cityscapes", "mapillary", "bdd100k", "acdc", "synthia"):
        assert pan._prepare(name, root) == 0, name
    register_all(root, replace=True)

    from rein_d2.data.synthetic_streets import SPLITS, register_synthetic_streets
    for name in SPLITS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_synthetic_streets(os.path.join(root, "synthstreets"), n_train=2, n_val=1,
                               size=(pan.H, pan.W))
    # every metadata as it was, restored afterwards: the evaluation sizes changed here, and the
    # json_file that detectron2's COCOEvaluator caches into a dataset's metadata on first use
    kept = {name: dict(MetadataCatalog.get(name).__dict__) for name in DatasetCatalog.list()}
    for name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("eval_size", None):  # (set() refuses a change)
            meta.__dict__["eval_size"] = tuple(s // SCALE for s in meta.eval_size)
    yield root
    for name, state in kept.items():
        meta = MetadataCatalog.get(name)
        meta.__dict__.clear()
        meta.__dict__.update(state)
    for name in SPLITS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_synthetic_streets()
    mp.undo()
    register_all(before, replace=True)


def _shrunk(cfg):
    """KEY VALUE overrides shrinking ``cfg`` (a loaded config) as the module says."""
    opts = ["MODEL.VIT.EMBED_DIM", 64, "MODEL.VIT.DEPTH", 4, "MODEL.VIT.NUM_HEADS", 2,
            "MODEL.VIT.IMG_SIZE", cfg.MODEL.VIT.IMG_SIZE // SCALE, "MODEL.CNN.DEPTHS", [1, 1, 1, 1],
            "MODEL.REIN.TOKEN_LENGTH", 10, "MODEL.REIN.LORA_DIM", 4, "MODEL.REIN.QUERY_DIM", 32,
            "SOLVER.MAX_ITER", 1, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 1000,
            "DATALOADER.NUM_WORKERS", 0, "MODEL.DEVICE", "cpu", "MODEL.ALLOW_RANDOM_WEIGHTS", True,
            "INPUT.MIN_SIZE_TRAIN", tuple(s // SCALE for s in cfg.INPUT.MIN_SIZE_TRAIN),
            "INPUT.MAX_SIZE_TRAIN", cfg.INPUT.MAX_SIZE_TRAIN // SCALE,
            "INPUT.MIN_SIZE_TEST", cfg.INPUT.MIN_SIZE_TEST // SCALE,
            "INPUT.MAX_SIZE_TEST", cfg.INPUT.MAX_SIZE_TEST // SCALE,
            "INPUT.CROP.SIZE", [s // SCALE for s in cfg.INPUT.CROP.SIZE]]
    if cfg.MODEL.VIT.VPT_TOKENS:
        opts += ["MODEL.VIT.VPT_TOKENS", 4]
    if cfg.MODEL.VIT.LORA_RANK:
        opts += ["MODEL.VIT.LORA_RANK", 4]
    if "REINDET" in cfg.MODEL:
        anchors = [[s // SCALE for s in x] for x in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
        opts += ["MODEL.REINDET.OUT_CHANNELS", 32,
                 "MODEL.REINDET.SQUARE_PAD", cfg.MODEL.REINDET.SQUARE_PAD // SCALE,
                 "INPUT.LSJ.IMAGE_SIZE", cfg.INPUT.LSJ.IMAGE_SIZE // SCALE,
                 "MODEL.ANCHOR_GENERATOR.SIZES", anchors,
                 "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
                 "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.PRE_NMS_TOPK_TEST", 200,
                 "MODEL.RPN.POST_NMS_TOPK_TEST", 20, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
                 "TEST.DETECTIONS_PER_IMAGE", 20, "MODEL.ROI_BOX_HEAD.NUM_CONV", 2,
                 "MODEL.ROI_BOX_HEAD.CONV_DIM", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
                 "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 2]
    else:
        test = cfg.MODEL.MASK2FORMER.TEST
        opts += ["MODEL.MASK2FORMER.HIDDEN_DIM", 32, "MODEL.MASK2FORMER.NUM_QUERIES", 10,
                 "MODEL.MASK2FORMER.NHEADS", 4, "MODEL.MASK2FORMER.DEC_LAYERS", 3,
                 "MODEL.MASK2FORMER.DIM_FEEDFORWARD", 64, "MODEL.MASK2FORMER.ENC_LAYERS", 1,
                 "MODEL.MASK2FORMER.ENC_DIM_FEEDFORWARD", 64, "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", 256,
                 "MODEL.MASK2FORMER.TEST.CROP_SIZE", tuple(s // SCALE for s in test.CROP_SIZE),
                 "MODEL.MASK2FORMER.TEST.STRIDE", tuple(math.ceil(s / SCALE) for s in test.STRIDE)]
    return opts


def test_overrides_only_shrink():
    for name in CONFIGS:
        opts = _shrunk(load_config(os.path.join(REPO, name)))
        assert set(opts[::2]) <= SHRINK_KEYS, (name, set(opts[::2]) - SHRINK_KEYS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_one_iteration_and_evaluates(name, datasets, tmp_path, monkeypatch):
    from rein_d2.engine import ReinTrainer

    monkeypatch.chdir(tmp_path)  # nothing may be written outside OUTPUT_DIR (cityscapesscripts did)

    cfg = load_config(os.path.join(REPO, name))
    if not cfg.DATASETS.TRAIN:
        # A base config (its children name the data) or the street-frames config (its tool,
        # tools/learn_street_frames.py, trains it: tests/test_learning.py).
        children = [c for c in CONFIGS if os.path.basename(name) in open(os.path.join(REPO, c)).read()]
        assert children or name == "configs/misc/street_frames_dinov2_s.yaml", name
        return
    cfg = load_config(os.path.join(REPO, name), _shrunk(cfg) + ["OUTPUT_DIR", str(tmp_path / "output")])
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 1 and all(math.isfinite(v) for v, _ in losses), name
    results = trainer._last_eval_results  # the evaluation after the last iteration
    instances = cfg.MODEL.MASK_ON if "REINDET" in cfg.MODEL else cfg.MODEL.MASK2FORMER.TEST.INSTANCE_ON
    assert set(cfg.DATASETS.TEST) <= set(results), (name, list(results))
    for target in cfg.DATASETS.TEST:
        scores = results[target]
        assert scores and all(math.isfinite(v) for v in scores.values()), (name, target)
        # one AP definition per column: cityscapesscripts' AP apart from COCO's
        kind = MetadataCatalog.get(target).evaluator_type
        ap = "cityscapes_AP" if kind.startswith("cityscapes") else "AP"
        assert not ({"AP", "cityscapes_AP"} - {ap}) & set(scores), (name, target, scores)
        assert (ap in scores) == (instances and kind != "sem_seg"), (name, target, scores)
    assert os.listdir(tmp_path) == ["output"], os.listdir(tmp_path)
