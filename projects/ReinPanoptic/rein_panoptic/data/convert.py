"""Shared core of the panoptic preparation scripts: a source panoptic label (segment ids plus
a class and crowd flag per segment) becomes

- a COCO panoptic PNG over the 19 classes, with Cityscapes' id convention (cityscapesscripts'
  createPanopticImgs): a stuff segment has id = its label id (one segment per stuff class per
  image: PQ scores each stuff class as one segment), a crowd region of a thing class has id =
  its label id (one per class), a thing instance has id = label id * 1000 + n (n = 1, 2, ..);
  pixels of unmapped classes are void (0);
- a train-id PNG (the same pixels as the panoptic PNG, 255 where void), for mIoU;
- its COCO segments_info and, for the things, COCO instance annotations (RLE masks).

Because the ids say class and crowd flag, segments_info is read back from a panoptic PNG alone
(``describe``): a rerun rebuilds the jsons from the PNGs it kept, and Cityscapes' own panoptic
PNGs (same convention) are described by the same function."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb, rgb2id
from scipy import ndimage

from rein_d2.data.datasets.common import parallel_imap, read_label, write_png_atomic

from .classes import (CLASSES, IGNORE_LABEL, LABELID_TO_TRAINID, THING_TRAIN_IDS,
                      TRAINID_TO_LABELID, coco_categories)

__all__ = ["encode_segments", "describe", "read_panoptic_png", "write_panoptic_png",
           "convert_split", "subset", "write_json_atomic", "fresh"]

_THINGS = frozenset(THING_TRAIN_IDS)
MAX_INSTANCES = 999  # instance numbers must stay below the label divisor 1000


def encode_segments(ids, infos, src):
    """ids: HxW source segment ids (0 = void); infos: {source id: (train id or 255, iscrowd)}.
    Returns (panoptic ids HxW uint32 in the convention above, train ids HxW uint8)."""
    uniq, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
    pan_of = np.zeros(len(uniq), np.uint32)
    sem_of = np.full(len(uniq), IGNORE_LABEL, np.uint8)
    count = {}
    for k, sid in enumerate(uniq.tolist()):
        if sid == 0:
            continue
        if sid not in infos:
            raise ValueError(f"{src}: segment id {sid} is in the label image but has no "
                             f"segments_info entry: the label image and its json do not match "
                             f"(download both again)")
        t, crowd = infos[sid]
        if t == IGNORE_LABEL:
            continue
        label = TRAINID_TO_LABELID[t]
        sem_of[k] = t
        if t not in _THINGS or crowd:
            pan_of[k] = label  # merged: one segment per stuff class / crowd region per class
        else:
            count[t] = count.get(t, 0) + 1
            if count[t] > MAX_INSTANCES:
                raise ValueError(f"{src}: more than {MAX_INSTANCES} instances of "
                                 f"'{CLASSES[t]}' in one image")
            pan_of[k] = label * 1000 + count[t]
    inverse = inverse.reshape(np.shape(ids))
    return pan_of[inverse], sem_of[inverse]


def describe(pan, src=""):
    """(segments_info, thing annotations) of a panoptic id map in the convention above.

    segments_info: COCO panoptic entries (id, category_id = label id, iscrowd, area, bbox).
    thing annotations: COCO instance entries without id / image_id (RLE segmentation)."""
    uniq, inverse = np.unique(pan, return_inverse=True)
    inverse = inverse.reshape(pan.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(uniq))
    # find_objects numbers labels from 1: shift so that index k is unique value k.
    boxes = ndimage.find_objects(inverse + 1)
    segments, things = [], []
    for k, sid in enumerate(uniq.tolist()):
        if sid == 0:
            continue
        label = sid if sid < 1000 else sid // 1000
        if label not in LABELID_TO_TRAINID:
            raise ValueError(f"{src}: panoptic segment id {sid} is not of one of the 19 classes "
                             f"(label id {label}): not a converted panoptic label?")
        isthing = LABELID_TO_TRAINID[label] in _THINGS
        ys, xs = boxes[k]
        bbox = [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]
        crowd = int(isthing and sid < 1000)
        segments.append({"id": sid, "category_id": label, "iscrowd": crowd,
                         "area": int(areas[k]), "bbox": bbox})
        if isthing:
            rle = mask_util.encode(np.asfortranarray(inverse == k, dtype=np.uint8))
            rle["counts"] = rle["counts"].decode("ascii")
            things.append({"category_id": label, "iscrowd": crowd, "area": int(areas[k]),
                           "bbox": [float(v) for v in bbox], "segmentation": rle})
    return segments, things


def read_panoptic_png(path):
    """COCO panoptic PNG (RGB, id = R + 256 G + 256^2 B) -> ids."""
    arr = read_label(path, cv2.IMREAD_COLOR)
    return rgb2id(np.ascontiguousarray(arr[:, :, ::-1]))


def write_panoptic_png(dst, pan):
    write_png_atomic(dst, np.ascontiguousarray(id2rgb(pan)[:, :, ::-1]))  # cv2 writes BGR


def fresh(dst, *srcs):
    """dst exists and is at least as new as every source (else it is made again)."""
    return os.path.exists(dst) and all(os.path.getmtime(dst) >= os.path.getmtime(s) for s in srcs)


def _convert_one(job):
    """One image: convert (unless its outputs are up to date), then describe the panoptic PNG."""
    reader, srcs, pan_dst, sem_dst = job
    if reader is not None and not (fresh(pan_dst, *srcs) and fresh(sem_dst, *srcs)):
        ids, infos = reader()
        pan, sem = encode_segments(ids, infos, srcs[0])
        write_panoptic_png(pan_dst, pan)
        write_png_atomic(sem_dst, sem)
    else:
        pan = read_panoptic_png(pan_dst)
    segments, things = describe(pan, pan_dst)
    return pan.shape, segments, things


def write_json_atomic(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def convert_split(items, panoptic_json, instances_json, workers=1, desc="panoptic"):
    """items: dicts with image_id (int), file_name (image, relative to the image root),
    pan_file (relative to the panoptic root), pan_dst / sem_dst (absolute outputs), srcs (the
    raw files the outputs come from) and reader (a picklable callable giving (ids, infos), or
    None when pan_dst is already the panoptic PNG). Writes the COCO panoptic json and the COCO
    instances json of the things; returns (number converted, number up to date, panoptic json
    data, instances json data)."""
    jobs = [(it["reader"], it["srcs"], it["pan_dst"], it["sem_dst"]) for it in items]
    todo = sum(1 for r, s, p, m in jobs if r is not None and not (fresh(p, *s) and fresh(m, *s)))
    images, annotations, instances = [], [], []
    for it, (shape, segments, things) in zip(items, parallel_imap(jobs, _convert_one, workers, desc)):
        images.append({"id": it["image_id"], "file_name": it["file_name"],
                       "height": int(shape[0]), "width": int(shape[1])})
        annotations.append({"image_id": it["image_id"], "file_name": it["pan_file"],
                            "segments_info": segments})
        for t in things:
            instances.append({"id": len(instances) + 1, "image_id": it["image_id"], **t})
    panoptic = {"images": images, "annotations": annotations, "categories": coco_categories()}
    things = {"images": images, "annotations": instances, "categories": coco_categories(things_only=True)}
    if panoptic_json:  # None: the panoptic json exists already (Cityscapes: cityscapesscripts')
        write_json_atomic(panoptic_json, panoptic)
    write_json_atomic(instances_json, things)
    return todo, len(items) - todo, panoptic, things


def subset(data, image_ids):
    """The part of a COCO (panoptic or instances) json about the given images."""
    keep = set(image_ids)
    return {"images": [i for i in data["images"] if i["id"] in keep],
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
            "categories": data["categories"]}
