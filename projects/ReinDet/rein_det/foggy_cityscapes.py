"""Foggy Cityscapes (Sakaridis et al., IJCV 2018) as instance test sets scored with COCO AP.

Its images are Cityscapes frames with synthetic fog at three densities (attenuation beta 0.005,
0.01, 0.02), in the official archive ``leftImg8bit_trainvaltest_foggy.zip``; the annotations
are Cityscapes' own ``gtFine``. detectron2's per-frame Cityscapes conversion reads the frames
and their instance-id PNGs (exact masks, RLE; no shapely needed; boxes spanning each whole
mask), then each record's file name is mapped to the foggy image of the beta. Registered (lazily: nothing is read until the loader runs):
``foggy_cityscapes_{0.02,0.01,0.005}_instance_{train,val}``.
"""
import functools
import os

import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from detectron2.data.datasets.cityscapes import _cityscapes_files_to_dict, _get_cityscapes_files

from rein_d2.data.datasets.common import _missing_root_error, datasets_root, parallel_imap

__all__ = ["FOGGY_BETAS", "FOGGY_LAYOUT", "foggy_file_name", "load_cityscapes_instance_pngs",
           "load_foggy_cityscapes_instances", "mask_extent", "register_foggy_cityscapes"]

FOGGY_BETAS = ("0.02", "0.01", "0.005")  # densest first, as the literature reports them
SPLITS = ("train", "val")  # the test split's gtFine holds no instances
FOGGY_LAYOUT = """\
cityscapes/leftImg8bit_foggy/{train,val}/<city>/<stem>_leftImg8bit_foggy_beta_{0.02,0.01,0.005}.png
cityscapes/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png    (the frame list)
cityscapes/gtFine/{train,val}/<city>/<stem>_gtFine_{instanceIds.png,labelIds.png,polygons.json}
(leftImg8bit_trainvaltest_foggy.zip, leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip
from cityscapes-dataset.com, each extracted into cityscapes/)"""
CHECK_SCRIPT = "projects/ReinDet/check_foggy_cityscapes.py"
_CLEAR_SUFFIX = "_leftImg8bit.png"
# Cityscapes label id -> contiguous thing id (detectron2's order: the 8 instance classes).
_THING_IDS = {l.id: i for i, l in enumerate(l for l in CITYSCAPES_LABELS if l.hasInstances and not l.ignoreInEval)}
_PARALLEL_FROM = 64  # frames; fewer convert faster in-process than spawned workers start


def load_cityscapes_instance_pngs(image_dir: str, gt_dir: str):
    """detectron2 instance records (RLE masks) of a Cityscapes split from its instance-id PNGs.
    detectron2's ``load_cityscapes_instances`` forks a Pool from this process, whose torch and
    OpenCV threads can leave a forked worker deadlocked (it hung a CI run); this converts each
    frame with detectron2's own function, in spawned workers when there are many."""
    files = _get_cityscapes_files(image_dir, gt_dir)
    workers = min(8, os.cpu_count() or 1) if len(files) >= _PARALLEL_FROM else 1
    convert = functools.partial(_cityscapes_files_to_dict, from_json=False, to_polygons=False)
    records = list(parallel_imap(files, convert, workers, f"cityscapes instances {gt_dir}"))
    for r in records:
        for anno in r["annotations"]:
            anno["category_id"] = _THING_IDS[anno["category_id"]]
            anno["bbox"] = mask_extent(anno["segmentation"])
    return records


def mask_extent(rle) -> tuple:
    """The XYXY box spanning every pixel of a mask (x1 = last column + 1), as the training sets
    (COCO json boxes), the jitter's recomputed boxes and the model's predictions span it.
    detectron2's Cityscapes reader stops at the last pixel, one short: perfect masks then
    scored box AP 68-79 instead of 100."""
    x, y, w, h = mask_util.toBbox(rle).tolist()
    return (x, y, x + w, y + h)


def foggy_file_name(clear_file: str, clear_dir: str, foggy_dir: str, beta: str) -> str:
    """<clear_dir>/<city>/<stem>_leftImg8bit.png -> <foggy_dir>/<city>/<stem>_leftImg8bit_foggy_beta_<beta>.png"""
    rel = os.path.relpath(clear_file, clear_dir)
    return os.path.join(foggy_dir, rel[: -len(_CLEAR_SUFFIX)] + f"_leftImg8bit_foggy_beta_{beta}.png")


def load_foggy_cityscapes_instances(name: str, split: str, beta: str):
    """detectron2 instance records of one split at one fog density (root: DETECTRON2_DATASETS)."""
    root = os.path.join(datasets_root(), "cityscapes")
    foggy_dir, clear_dir, gt_dir = (os.path.join(root, d, split)
                                    for d in ("leftImg8bit_foggy", "leftImg8bit", "gtFine"))
    for d in (foggy_dir, clear_dir, gt_dir):
        if not os.path.isdir(d):
            raise _missing_root_error(name, d, FOGGY_LAYOUT, CHECK_SCRIPT)
    # From the instance-id PNGs: exact masks, as the Cityscapes benchmark scores them.
    records = load_cityscapes_instance_pngs(clear_dir, gt_dir)
    missing = []
    for r in records:
        r["file_name"] = foggy_file_name(r["file_name"], clear_dir, foggy_dir, beta)
        r["image_id"] = os.path.basename(r["file_name"])
        if not os.path.isfile(r["file_name"]):
            missing.append(r["file_name"])
    if missing:
        raise FileNotFoundError(
            f"Dataset '{name}': {len(missing)} of {len(records)} Cityscapes frames have no foggy "
            f"image at beta {beta}, e.g. {missing[0]}: extract leftImg8bit_trainvaltest_foggy.zip "
            f"into {root} (layout:\n{FOGGY_LAYOUT})")
    return records


def register_foggy_cityscapes() -> None:
    """Register every (beta, split) lazily, with Cityscapes' 8 thing classes and COCO AP."""
    thing_classes = MetadataCatalog.get("cityscapes_fine_instance_seg_val").thing_classes
    for beta in FOGGY_BETAS:
        for split in SPLITS:
            name = f"foggy_cityscapes_{beta}_instance_{split}"
            if name in DatasetCatalog.list():
                continue  # registered already (the package imported twice under two names)
            DatasetCatalog.register(name, functools.partial(load_foggy_cityscapes_instances,
                                                            name, split, beta))
            MetadataCatalog.get(name).set(
                thing_classes=list(thing_classes), evaluator_type="coco", beta=float(beta),
                image_root=os.path.join(datasets_root(), "cityscapes", "leftImg8bit_foggy", split))
