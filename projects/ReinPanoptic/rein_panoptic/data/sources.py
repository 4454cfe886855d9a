"""Readers of each dataset's raw panoptic / instance labels: every reader returns (ids, infos),
ids a HxW array of source segment ids (0 = void) and infos {source id: (train id or 255,
iscrowd)}, for ``convert.encode_segments``. Class mappings reuse rein_d2's (REIN_SPEC
section 6); BDD100K's panoptic categories are listed here (its semantic masks are train ids
already, so rein_d2 has no table for them)."""
import numpy as np
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from rein_d2.data.datasets.common import ID_TO_TRAINID, IGNORE_LABEL, read_label
from rein_d2.data.datasets.labels import SYNTHIA_TO_TRAINID, mapillary_name_to_trainid

from .classes import CLASSES, THING_TRAIN_IDS
from .convert import read_panoptic_png

__all__ = ["BDD100K_PANOPTIC_CATEGORIES", "BDD100K_TO_TRAINID", "SYNTHIA_MAX_CLASS",
           "mapillary_category_map", "cityscapes_category_map", "coco_panoptic_segments",
           "bdd100k_segments", "synthia_segments"]

_THINGS = frozenset(THING_TRAIN_IDS)

# BDD100K panoptic segmentation categories, by id (bdd100k/label/label.py `labels`, and the
# "Panoptic Segmentation" list of the BDD100K label format documentation).
BDD100K_PANOPTIC_CATEGORIES = (
    "unlabeled", "dynamic", "ego vehicle", "ground", "static", "parking", "rail track", "road",
    "sidewalk", "bridge", "building", "fence", "garage", "guard rail", "tunnel", "wall",
    "banner", "billboard", "lane divider", "parking sign", "pole", "polegroup", "street light",
    "traffic cone", "traffic device", "traffic light", "traffic sign", "traffic sign frame",
    "terrain", "vegetation", "sky", "person", "rider", "bicycle", "bus", "car", "caravan",
    "motorcycle", "trailer", "train", "truck",
)
# By name: the 19 Cityscapes names map to themselves, the other 22 categories are void.
BDD100K_TO_TRAINID = np.array([CLASSES.index(n) if n in CLASSES else IGNORE_LABEL
                               for n in BDD100K_PANOPTIC_CATEGORIES], np.uint8)
# BDD100K bitmask attribute bits (G channel): ignore = 1, crowd = 2 (occluded 4, truncated 8).
_BDD_CROWD_OR_IGNORE = 0b11

SYNTHIA_MAX_CLASS = 22  # RAND-CITYSCAPES class ids 0 (void) .. 22 (lanemarking)
_SYNTHIA_LUT = np.full(SYNTHIA_MAX_CLASS + 1, IGNORE_LABEL, np.uint8)
for _k, _v in SYNTHIA_TO_TRAINID.items():
    _SYNTHIA_LUT[_k] = _v


def mapillary_category_map(categories, src=""):
    """Mapillary panoptic json categories -> {category id: (train id, source isthing)}, by
    the readable name (rein_d2's Mapillary mapping)."""
    out = {c["id"]: (mapillary_name_to_trainid(c["name"]), bool(c.get("isthing", 0))) for c in categories}
    if all(t == IGNORE_LABEL for t, _ in out.values()):  # e.g. machine names: all would be void
        raise ValueError(f"{src}: none of its category names is one of Mapillary v1.2's readable "
                         f"names that map to the 19 classes (such as 'Road', 'Car'): expected "
                         f"v1.2's panoptic_2018.json")
    return out


def cityscapes_category_map(categories, src=""):
    """Categories that are Cityscapes label ids (ACDC) -> {id: (train id, source isthing)}.
    A category whose name is not the Cityscapes name of its id is refused: such a json numbers
    categories otherwise (train ids, say), and mapping it by label id would be wrong."""
    out = {}
    for c in categories:
        label = id2label.get(c["id"])
        if label is None or c.get("name", label.name) != label.name:
            raise ValueError(f"{src}: category {c} is not a Cityscapes label id (id {c['id']} is "
                             f"{label.name if label else 'no Cityscapes label'!r}): expected "
                             f"categories numbered by Cityscapes label ids, as ACDC's panoptic jsons are")
        out[c["id"]] = (int(ID_TO_TRAINID[c["id"]]) if c["id"] >= 0 else IGNORE_LABEL, bool(c.get("isthing", 0)))
    return out


def coco_panoptic_segments(png, segments_info, category_map):
    """A COCO panoptic PNG and its segments_info. A segment of a class that is not a thing in
    the source but is one of our things has no instance identity: it becomes a crowd region."""
    ids = read_panoptic_png(png)
    infos = {}
    for s in segments_info:
        if s["category_id"] not in category_map:
            raise ValueError(f"{png}: segment {s['id']} has category {s['category_id']}, which "
                             f"is not in the json's categories: damaged json? download it again")
        t, src_thing = category_map[s["category_id"]]
        infos[s["id"]] = (t, bool(s.get("iscrowd", 0)) or (t in _THINGS and not src_thing))
    return ids, infos


def bdd100k_segments(png):
    """BDD100K pan_seg bitmask: RGBA, R = category id (0..40), G = attribute bits, B * 256 + A
    = instance id. Crowd or ignored instances are crowd regions, as BDD100K's own COCO panoptic
    converter makes them."""
    with Image.open(png) as img:
        mode = img.mode
        arr = np.asarray(img) if mode == "RGBA" else None
    if arr is None:
        raise ValueError(f"{png}: expected a BDD100K RGBA bitmask PNG, got PIL mode {mode}")
    arr = arr.astype(np.int64)
    cat, attr, inst = arr[..., 0], arr[..., 1], (arr[..., 2] << 8) + arr[..., 3]
    if cat.max() >= len(BDD100K_PANOPTIC_CATEGORIES):
        raise ValueError(f"{png}: category ids {sorted(set(np.unique(cat).tolist()) - set(range(41)))} "
                         f"outside BDD100K's panoptic categories 0..40: not a pan_seg bitmask?")
    ids = np.where(cat > 0, (cat << 16) + inst, 0)
    crowd = set(np.unique(ids[(attr & _BDD_CROWD_OR_IGNORE) != 0]).tolist())
    return ids, {sid: (int(BDD100K_TO_TRAINID[sid >> 16]), sid in crowd) for sid in np.unique(ids).tolist()}


def synthia_segments(png):
    """SYNTHIA RAND-CITYSCAPES 16-bit label: class id in the first (red) channel, instance id
    in the second (OpenCV reads BGR: channels 2 and 1). Things: one segment per (class,
    instance id > 0); thing pixels with instance id 0 form a crowd region; stuff: one per class."""
    arr = read_label(png)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"{png}: expected a 3-channel 16-bit SYNTHIA label, got shape {arr.shape}")
    cls, inst = arr[..., 2].astype(np.int64), arr[..., 1].astype(np.int64)
    if cls.max() > SYNTHIA_MAX_CLASS:
        raise ValueError(f"{png}: class ids {sorted(v for v in np.unique(cls).tolist() if v > SYNTHIA_MAX_CLASS)} "
                         f"outside SYNTHIA's 0..{SYNTHIA_MAX_CLASS}: not a RAND-CITYSCAPES GT/LABELS file?")
    thing = np.isin(_SYNTHIA_LUT[cls], list(_THINGS))
    ids = np.where(thing, (cls << 16) + inst, cls << 16)
    return ids, {sid: (int(_SYNTHIA_LUT[sid >> 16]), int(_SYNTHIA_LUT[sid >> 16]) in _THINGS and sid & 0xFFFF == 0)
                 for sid in np.unique(ids).tolist()}
