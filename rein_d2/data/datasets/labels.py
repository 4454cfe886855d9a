"""Per-dataset raw label -> 19 Cityscapes train ids (docs/method.md section 6), plus the common
command line of the ``datasets/prepare_<name>.py`` scripts."""
import argparse
import json
import sys

import numpy as np
from PIL import Image

from ...utils.cli import EXIT_REFUSED, one_line
from .common import CITYSCAPES_CLASSES, ID_TO_TRAINID, IGNORE_LABEL, datasets_root, read_label


def _lut(mapping, size=256):
    lut = np.full(size, IGNORE_LABEL, dtype=np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def _read_index_png(path):
    """The indices of a palette (P) or 8-bit (L) PNG, with the path in every error."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.array(img) if mode in ("P", "L") else None
    except Exception as e:  # PIL's "image file is truncated" names no file
        raise OSError(f"{path}: cannot read label ({type(e).__name__}: {e}): damaged or "
                      f"incomplete file, download it again") from e
    if arr is None:
        raise ValueError(f"{path}: expected a palette (P) or 8-bit (L) PNG, got mode {mode}")
    return arr


# Cityscapes label ids (cityscapesscripts' table): 0..33; the licence plate's -1 is never drawn
# into a labelIds PNG.
CITYSCAPES_NUM_LABEL_IDS = 34


def cityscapes_ids_to_trainids(path):
    """Cityscapes *_gtFine_labelIds.png (8-bit label ids). A value that is no Cityscapes label
    id is refused, naming it, rather than silently becoming ignore (255)."""
    arr = read_label(path)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label-id PNG, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{path}: a {arr.dtype.itemsize * 8}-bit PNG, but Cityscapes label ids "
                         "(*_gtFine_labelIds.png) are 8-bit (the 16-bit *_instanceIds.png hold "
                         "instance ids): give the labelIds file, or store your ids as 8-bit PNG")
    bad = np.flatnonzero(np.bincount(arr.ravel(), minlength=256)[CITYSCAPES_NUM_LABEL_IDS:])
    if bad.size:
        shown = ", ".join(str(v + CITYSCAPES_NUM_LABEL_IDS) for v in bad[:10])
        raise ValueError(f"{path}: values {shown} are not Cityscapes label ids (0..33); is it a "
                         "*_gtFine_labelIds.png? Replace the file (or fix its ids), then rerun")
    return ID_TO_TRAINID[arr]


def gtav_ids_to_trainids(path):
    """GTAV labels are palette PNGs whose indices are Cityscapes label ids.

    Read with PIL: cv2 would expand the palette to colours and lose the ids.
    """
    return ID_TO_TRAINID[_read_index_png(path)]


# SYNTHIA RAND-CITYSCAPES class id -> train id (no terrain, truck or train).
SYNTHIA_TO_TRAINID = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10,
                      10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18}
_SYNTHIA_LUT = _lut(SYNTHIA_TO_TRAINID, 65536)


def synthia_to_trainids(path):
    """16-bit 3-channel PNG; the class id is the red channel (index 2 in cv2's BGR order)."""
    arr = read_label(path)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"{path}: expected a 3-channel SYNTHIA label, got shape {arr.shape}")
    return _SYNTHIA_LUT[arr[:, :, 2].astype(np.int64)]


# UrbanSyn's ss/ss_<NNNN>.png hold the 19 train ids and 19 for unlabelled pixels.
URBANSYN_UNLABELLED = 19
_URBANSYN_LUT = _lut({**{i: i for i in range(19)}, URBANSYN_UNLABELLED: IGNORE_LABEL, IGNORE_LABEL: IGNORE_LABEL})


def urbansyn_to_trainids(path):
    """UrbanSyn semantic label (8-bit, one channel): train ids kept, unlabelled (19) to 255.
    Any other value, or a colour file (ss_color/), is refused: the encoding would not be the
    one this mapping assumes."""
    arr = _read_index_png(path)
    bad = sorted(set(np.unique(arr).tolist()) - set(range(20)) - {IGNORE_LABEL})
    if bad:
        raise ValueError(f"{path}: values {bad[:10]} outside UrbanSyn's train ids 0..18 and 19 "
                         f"(unlabelled): expected a file of UrbanSyn's ss/ folder")
    return _URBANSYN_LUT[arr]


# Mapillary Vistas v1.2 readable name -> train id. Exact class names first, then the extras.
_MAPILLARY_EXTRA = {
    "Traffic Sign (Front)": "traffic sign", "Traffic Sign (Back)": "traffic sign",
    "Traffic Sign Frame": "traffic sign", "On Rails": "train",
    "Bicyclist": "rider", "Motorcyclist": "rider", "Other Rider": "rider",
    "Street Light": "pole", "Utility Pole": "pole",
    "Curb": "sidewalk", "Curb Cut": "sidewalk", "Pedestrian Area": "sidewalk",
    "Crosswalk - Plain": "road", "Parking": "road", "Bike Lane": "road", "Service Lane": "road",
    "Lane Marking - Crosswalk": "road", "Lane Marking - General": "road",
}
_MAPILLARY_EXACT = ("Road", "Sidewalk", "Building", "Wall", "Fence", "Pole", "Traffic Light",
                    "Vegetation", "Terrain", "Sky", "Person", "Car", "Truck", "Bus",
                    "Motorcycle", "Bicycle")


def mapillary_name_to_trainid(readable):
    if readable in _MAPILLARY_EXACT:
        return CITYSCAPES_CLASSES.index(readable.lower())
    if readable in _MAPILLARY_EXTRA:
        return CITYSCAPES_CLASSES.index(_MAPILLARY_EXTRA[readable])
    return IGNORE_LABEL


def mapillary_lut(config_path):
    """Label index -> train id from config_v1.2.json (its 'labels' list, in index order)."""
    try:
        with open(config_path) as f:
            labels = json.load(f)["labels"]
    except (ValueError, KeyError, TypeError) as e:  # cut short, or another file of that name
        raise ValueError(f"{config_path}: not a Mapillary Vistas label list ({type(e).__name__}: "
                         f"{e}): download config_v1.2.json again") from e
    return _lut({i: mapillary_name_to_trainid(l["readable"]) for i, l in enumerate(labels)})


def mapillary_to_trainids(path, lut):
    return lut[_read_index_png(path)]


def prepare_argparser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--workers", type=int, default=8, help="parallel processes (1: in-process)")
    p.add_argument("--no-count-check", action="store_true", help="skip the split-size check (partial downloads)")
    p.add_argument("--check-images", action="store_true",
                   help="also decode every image and list the unreadable ones (resumable)")
    return p


def parse_prepare_args(description, argv):
    args = prepare_argparser(description).parse_args(argv)
    args.root = args.root or datasets_root()
    return args


def check_images_if_asked(args, prefix):
    """With --check-images: decode every image of the registered splits named ``prefix*``
    (raising once, listing the unreadable ones)."""
    if args.check_images:
        from .builtin import DATASETS
        from .common import check_all_images

        splits = {n: spec for n, spec in DATASETS.items() if n.startswith(prefix)}
        check_all_images(args.root, splits, args.workers)


def run_prepare(main, argv=None):
    """Entry point of the prepare scripts: an expected error (a missing, damaged or unexpected
    file) prints one line naming it, without a traceback, and gives exit status EXIT_REFUSED (2),
    that of every rein_d2 tool's refusal."""
    try:
        return main(argv)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_REFUSED


__all__ = ["cityscapes_ids_to_trainids", "gtav_ids_to_trainids", "synthia_to_trainids",
           "mapillary_lut", "mapillary_to_trainids", "mapillary_name_to_trainid",
           "SYNTHIA_TO_TRAINID", "URBANSYN_UNLABELLED", "urbansyn_to_trainids", "check_images_if_asked", "parse_prepare_args", "run_prepare"]
