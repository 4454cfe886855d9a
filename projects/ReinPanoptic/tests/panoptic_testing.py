"""Helpers of the ReinPanoptic tests: miniature model overrides, a tiny Cityscapes-style COCO
panoptic dataset (with its instances json and train-id labels) written to a folder and
registered, and a model stub that predicts a dataset's ground truth."""
import json
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
from detectron2.structures import BitMasks, Instances
from PIL import Image

from rein_d2 import load_config
from rein_d2.data.dataset_mappers.panoptic import rgb2id
from test_meta_arch import MINI_ARCH  # tests/ is on the path (pytest.ini)

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(PROJECT, "configs")
SETTINGS = ["cityscapes/panoptic_rein_dinov2_l.yaml", "cityscapes/instance_rein_dinov2_l.yaml",
            "synthia/panoptic_rein_dinov2_l.yaml", "synthia/instance_rein_dinov2_l.yaml"]

# rein_d2's miniature architecture (tests/test_meta_arch.py): the configs' structure at a size
# that trains on a CPU in a fraction of a second per step.
MINI = MINI_ARCH + ["MODEL.ALLOW_RANDOM_WEIGHTS", True]  # no pretrained VFM offline
# 64x96 frames as they are: no resize, crop or flip in training; evaluated at their size.
SMALL_INPUT = ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.CROP.ENABLED", False,
               "INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128,
               "DATALOADER.NUM_WORKERS", 0]

H, W = 64, 96
_BY_TRAINID = sorted((c for c in CITYSCAPES_CATEGORIES if 0 <= c["trainId"] < 19), key=lambda c: c["trainId"])
CLASSES = [c["name"] for c in _BY_TRAINID]
LABEL_ID = {c["name"]: c["id"] for c in _BY_TRAINID}
THINGS = [c for c in _BY_TRAINID if c["isthing"]]
# detectron2's Cityscapes panoptic metadata: json category ids are Cityscapes label ids,
# contiguous ids are train ids (things 11..18), every class named in both lists.
PANOPTIC_META = {
    "thing_classes": CLASSES, "stuff_classes": CLASSES,
    "thing_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in _BY_TRAINID if c["isthing"]},
    "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in _BY_TRAINID if not c["isthing"]},
}

# Per frame: (class, box x0 y0 x1 y1, iscrowd), painted in order over sky (top) and road
# (bottom); the first 3 columns stay void (unlabelled).
LAYOUTS = [
    [("car", (10, 30, 40, 56), 0), ("person", (60, 20, 72, 58), 0), ("person", (80, 4, 94, 14), 1)],
    [("car", (50, 36, 90, 62), 0), ("car", (8, 34, 30, 50), 0), ("bicycle", (34, 30, 46, 60), 0)],
]


def load_cfg(setting: str, *opts):
    """A ReinPanoptic config (path under configs/) with the miniature overrides and ``opts``."""
    return load_config(os.path.join(CONFIGS, setting), MINI + list(opts))


def _segments(layout):
    """Panoptic ids (H x W), train ids (H x W, 255 void) and segments [(id, class, iscrowd)]."""
    ids = np.zeros((H, W), np.int64)
    ids[:24, 3:], ids[24:, 3:] = LABEL_ID["sky"], LABEL_ID["road"]  # stuff: id = label id
    segments = [(LABEL_ID["sky"], "sky", 0), (LABEL_ID["road"], "road", 0)]
    for k, (name, (x0, y0, x1, y1), crowd) in enumerate(layout):
        seg_id = LABEL_ID[name] * 1000 + k + 1  # things: Cityscapes' label id * 1000 + instance
        ids[y0:y1, x0:x1] = seg_id
        segments.append((seg_id, name, crowd))
    train = np.full((H, W), 255, np.uint8)
    for seg_id, name, _ in segments:
        train[ids == seg_id] = CLASSES.index(name)
    return ids, train, segments


def _image(train: np.ndarray, rng) -> np.ndarray:
    """Each class in its Cityscapes colour, with noise: learnable from colour alone."""
    colours = np.array([c["color"] for c in _BY_TRAINID] + [(0, 0, 0)] * 237, np.int64)
    image = colours[train] + rng.integers(-20, 21, size=(H, W, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_panoptic_dataset(root, layouts=LAYOUTS, seed=0):
    """Writes the frames of ``layouts`` as a COCO panoptic dataset under ``root`` (images/*.jpg,
    panoptic/*.png + panoptic.json, semantic/*.png train ids, instances.json of the things)
    and registers it twice: returns (panoptic name, instance name)."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "panoptic", "semantic"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    images, pan_annotations, inst_annotations = [], [], []
    for i, layout in enumerate(layouts):
        ids, train, segments = _segments(layout)
        stem = f"frame{i}"
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(root, "panoptic", f"{stem}.png"))
        Image.fromarray(train).save(os.path.join(root, "semantic", f"{stem}.png"))
        Image.fromarray(_image(train, rng)).save(os.path.join(root, "images", f"{stem}.jpg"), quality=95)
        images.append({"id": i + 1, "file_name": f"{stem}.jpg", "height": H, "width": W})
        info = []
        for seg_id, name, crowd in segments:
            rle = mask_util.encode(np.asfortranarray((ids == seg_id).astype(np.uint8)))
            area, bbox = int(mask_util.area(rle)), mask_util.toBbox(rle).tolist()
            info.append({"id": int(seg_id), "category_id": LABEL_ID[name], "iscrowd": crowd,
                         "area": area, "bbox": bbox})
            if name in [c["name"] for c in THINGS]:
                inst_annotations.append({
                    "id": len(inst_annotations) + 1, "image_id": i + 1, "category_id": LABEL_ID[name],
                    "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
                    "area": area, "bbox": bbox, "iscrowd": crowd})
        pan_annotations.append({"image_id": i + 1, "file_name": f"{stem}.png", "segments_info": info})
    categories = [{"id": c["id"], "name": c["name"], "isthing": c["isthing"]} for c in _BY_TRAINID]
    pan_json, inst_json = os.path.join(root, "panoptic.json"), os.path.join(root, "instances.json")
    with open(pan_json, "w") as f:
        json.dump({"images": images, "annotations": pan_annotations, "categories": categories}, f)
    with open(inst_json, "w") as f:
        json.dump({"images": images, "annotations": inst_annotations,
                   "categories": [c for c in categories if c["isthing"]]}, f)

    image_root, pan_root = os.path.join(root, "images"), os.path.join(root, "panoptic")

    def load():  # detectron2's loader, plus the train-id label of each frame (for mIoU)
        dicts = load_coco_panoptic_json(pan_json, image_root, pan_root, PANOPTIC_META)
        for d in dicts:
            stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
            d["sem_seg_file_name"] = os.path.join(root, "semantic", f"{stem}.png")
        return dicts

    tag = uuid.uuid4().hex[:8]
    panoptic, instance = f"tiny_panoptic_{tag}", f"tiny_instance_{tag}"
    DatasetCatalog.register(panoptic, load)
    # as detectron2's register_coco_panoptic sets it, with the instances json for mask AP
    MetadataCatalog.get(panoptic).set(panoptic_root=pan_root, image_root=image_root,
                                      panoptic_json=pan_json, json_file=inst_json,
                                      evaluator_type="coco_panoptic_seg", ignore_label=255,
                                      label_divisor=1000, **PANOPTIC_META)
    register_coco_instances(instance, {}, inst_json, image_root)
    return panoptic, instance


def _instances(masks, classes) -> Instances:
    instances = Instances((H, W))
    instances.pred_masks = torch.as_tensor(np.stack(masks) if masks else np.zeros((0, H, W)), dtype=torch.bool)
    instances.pred_classes = torch.tensor(classes, dtype=torch.long)
    instances.scores = torch.ones(len(classes))
    instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
    return instances


class GroundTruthModel(torch.nn.Module):
    """Predicts the ground truth of each image it is given, in the output format of
    ReinMask2Former: "sem_seg" scores (from the train-id label), "panoptic_seg" and
    "instances" (from the panoptic PNG, things with their contiguous = train ids) for panoptic
    records; "instances" (from the annotations, contiguous thing ids) for instance records.
    Crowd regions are left unpredicted, as a model would."""

    def __init__(self, *dataset_names):
        super().__init__()
        self.records = {d["file_name"]: d for n in dataset_names for d in DatasetCatalog.get(n)}
        self.sizes = []  # the sizes of the images it was given

    def forward(self, inputs):
        return [self._predict(x) for x in inputs]

    def _predict(self, x):
        self.sizes.append(tuple(x["image"].shape[-2:]))
        d = self.records[x["file_name"]]
        assert (x["height"], x["width"]) == (H, W)
        if "annotations" in d:
            kept = [a for a in d["annotations"] if not a["iscrowd"]]
            return {"instances": _instances([mask_util.decode(a["segmentation"]) for a in kept],
                                            [a["category_id"] for a in kept])}
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB")))
        seg = torch.zeros((H, W), dtype=torch.int32)
        info, masks, classes = [], [], []
        for s in d["segments_info"]:
            if s["iscrowd"]:
                continue
            info.append({"id": len(info) + 1, "category_id": s["category_id"], "isthing": s["isthing"]})
            seg[torch.from_numpy(ids == s["id"])] = len(info)
            if s["isthing"]:
                masks.append(ids == s["id"])
                classes.append(s["category_id"])
        label = torch.from_numpy(np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64))
        scores = torch.nn.functional.one_hot(label.clamp(max=len(CLASSES) - 1), len(CLASSES))
        return {"sem_seg": scores.permute(2, 0, 1).float(), "panoptic_seg": (seg, info),
                "instances": _instances(masks, classes)}
