"""Mapillary Vistas specifics: the archive layouts a user may have, and the reference's
validation protocol.

The reference scores Mapillary val on images and labels halved beforehand (its
``mapillary_resize.py``: PIL, bicubic for the image, nearest for the label, sizes rounded
down, the image saved again as JPEG), then resized to 1024x512 with the aspect ratio kept.
``mapillary_val`` is that protocol, with the halved files written by
``datasets/prepare_mapillary.py``; ``mapillary_val_full`` scores the full-resolution labels.
"""
import os

import numpy as np
from PIL import Image

from .common import _run, _up_to_date, convert_labels, find_files

__all__ = ["HALF_IMAGE_DIR", "HALF_LABEL_DIR", "find_layout", "halve_label", "halve_image",
           "halve_validation", "half_size"]

HALF_IMAGE_DIR = "mapillary/validation/half/images"
HALF_LABEL_DIR = "mapillary/validation/half/labels_trainid"

# (config file, label folder under <split>/) of the archives: v1.2 inside the v2.0 download,
# and the older v1.x archives, which hold config.json and <split>/labels/ directly.
LAYOUTS = (("config_v1.2.json", "v1.2/labels"), ("config.json", "labels"))


def find_layout(mapillary_root: str):
    """(config path, label folder relative to <split>/) of the layout found, or None."""
    for config, labels in LAYOUTS:
        if os.path.isfile(os.path.join(mapillary_root, config)) and os.path.isdir(
                os.path.join(mapillary_root, "validation", labels)):
            return os.path.join(mapillary_root, config), labels
    return None


def half_size(width: int, height: int):
    return width // 2, height // 2  # the reference's integer division


def halve_label(path: str) -> np.ndarray:
    """A train-id label halved as the reference does: PIL nearest, size rounded down."""
    with Image.open(path) as img:
        return np.asarray(img.resize(half_size(*img.size), resample=Image.NEAREST), dtype=np.uint8)


def halve_image(job):
    """(src, dst): the image halved with PIL bicubic and saved as JPEG (PIL's default quality),
    as the reference does; written under a temporary name, then renamed."""
    src, dst = job
    try:
        with Image.open(src) as img:
            half = img.resize(half_size(*img.size), resample=Image.BICUBIC)
    except Exception as e:
        raise OSError(f"{src}: cannot read image ({type(e).__name__}: {e}): download it again, "
                      f"then rerun") from e
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp"
    half.save(tmp, format="JPEG")
    os.replace(tmp, dst)


def halve_validation(root: str, image_dir: str, label_dir: str, workers: int = 1):
    """Write the halved validation images and train-id labels (resumable: outputs at least as
    new as their source are kept). Returns the numbers of (images, labels) written."""
    image_dir, label_dir = os.path.join(root, image_dir), os.path.join(root, label_dir)
    images = [(s, os.path.join(root, HALF_IMAGE_DIR, os.path.relpath(s, image_dir)))
              for s in find_files(image_dir, ".jpg")]
    labels = [(s, os.path.join(root, HALF_LABEL_DIR, os.path.relpath(s, label_dir)))
              for s in find_files(label_dir, ".png")]
    todo = [p for p in images if not _up_to_date(*p)]
    _run(todo, halve_image, workers, "mapillary val images, halved")
    done, _ = convert_labels(labels, halve_label, workers, desc="mapillary val labels, halved")
    return len(todo), done
