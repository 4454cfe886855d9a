"""The one label space of every ReinPanoptic dataset: the 19 Cityscapes classes in train-id
order, contiguous ids = train ids, the 8 things = train ids 11..18.

The converted COCO jsons store Cityscapes *label ids* as category ids (7 road .. 33 bicycle), as
cityscapesscripts' createPanopticImgs and ACDC do, so detectron2's own Cityscapes panoptic
metadata, ours and the ground truth of every target agree id for id."""
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES

from rein_d2.data.datasets.common import CITYSCAPES_CLASSES, CITYSCAPES_COLORS, IGNORE_LABEL

__all__ = [
    "CLASSES", "COLORS", "THING_TRAIN_IDS", "STUFF_TRAIN_IDS", "TRAINID_TO_LABELID",
    "LABELID_TO_TRAINID", "LABEL_DIVISOR", "IGNORE_LABEL", "coco_categories",
    "panoptic_metadata", "instance_metadata", "CITYSCAPES_PANOPTIC_META", "CITYSCAPES_INSTANCE_META",
]

CLASSES = list(CITYSCAPES_CLASSES)
COLORS = [list(c) for c in CITYSCAPES_COLORS]
_BY_TRAINID = sorted((c for c in CITYSCAPES_CATEGORIES if 0 <= c["trainId"] < 19), key=lambda c: c["trainId"])
assert [c["name"] for c in _BY_TRAINID] == CLASSES
TRAINID_TO_LABELID = [c["id"] for c in _BY_TRAINID]
LABELID_TO_TRAINID = {lid: t for t, lid in enumerate(TRAINID_TO_LABELID)}
THING_TRAIN_IDS = tuple(t for t, c in enumerate(_BY_TRAINID) if c["isthing"])
STUFF_TRAIN_IDS = tuple(t for t in range(len(CLASSES)) if t not in THING_TRAIN_IDS)
assert THING_TRAIN_IDS == tuple(range(11, 19))
# Panoptic ids of model outputs (detectron2's convention): category * 1000 + instance.
LABEL_DIVISOR = 1000


def coco_categories(things_only=False):
    """The "categories" list of the converted jsons (ids are Cityscapes label ids)."""
    return [{"id": TRAINID_TO_LABELID[t], "name": CLASSES[t], "isthing": int(t in THING_TRAIN_IDS),
             "color": COLORS[t], "supercategory": "thing" if t in THING_TRAIN_IDS else "stuff"}
            for t in range(len(CLASSES)) if not things_only or t in THING_TRAIN_IDS]


def panoptic_metadata():
    """Metadata of a ``*_panoptic_*`` name, laid out as detectron2's Cityscapes panoptic
    registration lays it out: thing_classes and stuff_classes both list all 19 names, so that
    a contiguous id (= train id) indexes either; the two id maps send the json's label ids to
    train ids."""
    return {
        "thing_classes": list(CLASSES), "thing_colors": [list(c) for c in COLORS],
        "stuff_classes": list(CLASSES), "stuff_colors": [list(c) for c in COLORS],
        "thing_dataset_id_to_contiguous_id": {TRAINID_TO_LABELID[t]: t for t in THING_TRAIN_IDS},
        "stuff_dataset_id_to_contiguous_id": {TRAINID_TO_LABELID[t]: t for t in STUFF_TRAIN_IDS},
    }


def instance_metadata():
    """Metadata of a ``*_instance_*`` name: the 8 things, contiguous 0..7 (as detectron2's
    instance datasets number them; person = 0 .. bicycle = 7)."""
    return {
        "thing_classes": [CLASSES[t] for t in THING_TRAIN_IDS],
        "thing_colors": [list(COLORS[t]) for t in THING_TRAIN_IDS],
        "thing_dataset_id_to_contiguous_id": {TRAINID_TO_LABELID[t]: i for i, t in enumerate(THING_TRAIN_IDS)},
    }


CITYSCAPES_PANOPTIC_META = panoptic_metadata()
CITYSCAPES_INSTANCE_META = instance_metadata()
