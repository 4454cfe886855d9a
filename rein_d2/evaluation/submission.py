"""Predictions written in the formats of the public benchmark servers.

- ``cityscapes``: label-id PNGs (train ids mapped back to Cityscapes label ids; ignore -> 0,
  "unlabeled"), one per image, named ``<city>/<city>_<seq>_<frame>_leftImg8bit.png`` after the
  input, which is what the Cityscapes server and ``cityscapesscripts`` look for.
- ``acdc``: the same label ids, in the input's ``<condition>/<split>/<sequence>/`` folders
  and file names, as the ACDC server asks.
- ``bdd100k`` and ``trainid``: train-id PNGs (255 = ignore) under the input's relative path.
Colour PNGs (the Cityscapes palette) can be written beside, for a look.
"""
import os
from typing import Dict

import cv2
import numpy as np

from ..data.datasets.common import ID_TO_TRAINID, IGNORE_LABEL, colorize, write_png_atomic

__all__ = ["FORMATS", "TRAINID_TO_ID", "prediction_path", "to_submission", "write_prediction"]


def _trainid_to_id() -> np.ndarray:
    """Train id (0..18, 255) -> Cityscapes label id: the inverse of ID_TO_TRAINID, with
    ignore written as 0 ("unlabeled", never scored)."""
    lut = np.zeros(256, np.uint8)
    for label_id, train_id in enumerate(ID_TO_TRAINID[:256]):
        if train_id != IGNORE_LABEL:
            lut[train_id] = label_id
    return lut


TRAINID_TO_ID = _trainid_to_id()


def _label_ids(train_ids: np.ndarray) -> np.ndarray:
    return TRAINID_TO_ID[train_ids]


def _train_ids(train_ids: np.ndarray) -> np.ndarray:
    return train_ids


def _cityscapes_name(rel: str) -> str:
    """``<city>/<city>_<seq>_<frame>_leftImg8bit.png`` for a Cityscapes input path."""
    stem = os.path.splitext(os.path.basename(rel))[0]
    if not stem.endswith("_leftImg8bit"):
        stem += "_leftImg8bit"
    city = stem.split("_")[0]
    return os.path.join(city, stem + ".png")


def _same_path(rel: str) -> str:
    return os.path.splitext(rel)[0] + ".png"


# format -> (train ids -> stored values, input path relative to its root -> output path)
FORMATS: Dict[str, tuple] = {
    "cityscapes": (_label_ids, _cityscapes_name),
    "acdc": (_label_ids, _same_path),
    "bdd100k": (_train_ids, _same_path),
    "trainid": (_train_ids, _same_path),
}


def prediction_path(fmt: str, rel_input: str) -> str:
    """Where the prediction of the input at ``rel_input`` (relative to its root) goes."""
    return FORMATS[fmt][1](rel_input)


def to_submission(fmt: str, train_ids: np.ndarray) -> np.ndarray:
    """The stored values of a train-id map in format ``fmt``."""
    return FORMATS[fmt][0](np.asarray(train_ids, dtype=np.uint8))


def write_prediction(fmt: str, train_ids: np.ndarray, dst: str, color_dst: str = None, colors=None):
    """Write one prediction (atomically: an interrupted run leaves no partial file); the colour
    PNG with ``colors`` (RGB per class; default: the Cityscapes palette)."""
    write_png_atomic(dst, to_submission(fmt, train_ids))
    if color_dst:
        rgb = colorize(train_ids) if colors is None else colorize(train_ids, colors)
        write_png_atomic(color_dst, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
