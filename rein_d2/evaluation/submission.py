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
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.datasets.common import ID_TO_TRAINID, IGNORE_LABEL, colorize, write_png_atomic
from ..utils.cli import UserError, refuse_overwrite

__all__ = ["FORMATS", "TRAINID_TO_ID", "plan_predictions", "prediction_done", "prediction_path", "to_submission",
           "write_prediction"]


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


def plan_predictions(fmt: str, inputs: Sequence[str], root: str, output: str,
                     color: Optional[str] = None) -> List[Tuple[str, str, Optional[str]]]:
    """(input, prediction path, colour path or None) for each of ``inputs`` (below ``root``).

    Refused before anything is written, naming the files: an --output or --color folder that
    holds inputs, two inputs whose predictions would share a name (``x.png`` and ``x.jpg``:
    one would overwrite the other and both would count as done on a rerun), a colour PNG that
    would land on a prediction, and any output path that is an input file."""
    for flag, folder in (("--output", output), ("--color", color)):
        if not folder:
            continue
        real = os.path.realpath(folder)
        inside = next((f for f in inputs if os.path.realpath(f).startswith(real + os.sep)), None)
        if inside is not None:
            raise UserError(f"{flag} {folder} holds the inputs (e.g. {inside}): pass another folder")
    plan, by_out = [], {}
    for f in inputs:
        rel = os.path.relpath(f, root)
        out = os.path.join(output, prediction_path(fmt, rel))
        col = os.path.join(color, os.path.splitext(rel)[0] + ".png") if color else None
        for path in filter(None, (out, col)):
            key = os.path.normcase(os.path.realpath(path))
            if key in by_out:
                other = by_out[key]
                raise UserError(
                    f"{f} and {other} would both be written to {path} (their names differ only in "
                    "the extension, or --color is the --output folder): rename one of them, or "
                    "predict them into separate folders" if other != f else
                    f"--color {color} is the --output folder: the colour PNGs would replace the "
                    "predictions; pass another --color folder")
            by_out[key] = f
        plan.append((f, out, col))
    refuse_overwrite([p for _, out, col in plan for p in (out, col)], inputs, "--output/--color")
    return plan


def prediction_done(path: str) -> bool:
    """Whether a rerun may skip the prediction at ``path``: it exists and is not empty (an
    earlier version's write on a full disk left 0-byte files under the final names)."""
    return os.path.isfile(path) and os.path.getsize(path) > 0


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
