"""Semantic scoring shared by the domain-generalization and robustness evaluations: the test
mapper that resizes each image to its dataset's evaluation size (docs/method.md section 5), and
detectron2's SemSegEvaluator with a label reader that checks the labels."""
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from ..data.dataset_mappers.instance import read_image_checked
from ..data.datasets.common import dataset_dicts_checked
from ..utils.cli import UserError
from .protocol import eval_size_of

__all__ = ["DGTestMapper", "check_label_matches", "eval_resize_shape", "label_loader",
           "semantic_evaluator", "semantic_test_loader"]


def eval_resize_shape(h: int, w: int, scale: Optional[Sequence[int]]) -> Tuple[int, int]:
    """(h, w) after the reference's keep-ratio resize to ``scale`` (long, short edge limits):
    the image grows or shrinks by the largest factor that fits both limits."""
    if not scale:
        return h, w
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


class DGTestMapper:
    """Test mapper: the image resized (bilinear) to the dataset's evaluation size, with the
    original "height"/"width" so that predictions come back at the label's resolution."""

    def __init__(self, image_format: str, eval_size: Optional[Sequence[int]] = None):
        self.image_format = image_format
        self.eval_size = tuple(eval_size) if eval_size else None

    def read(self, d: Dict) -> np.ndarray:
        """The image of ``d`` (HxWx3, INPUT.FORMAT order); subclasses may alter it."""
        return read_image_checked(d["file_name"], self.image_format)

    def __call__(self, d: Dict) -> Dict:
        image = self.read(d)
        h, w = image.shape[:2]
        if "sem_seg_file_name" in d:
            check_label_matches(d["sem_seg_file_name"], d["file_name"], w, h)
        out = {k: v for k, v in d.items() if k in ("file_name", "sem_seg_file_name", "image_id")}
        out.update(self.model_input(image))
        return out

    def model_input(self, image: np.ndarray) -> Dict:
        """The model's input for one image (HxWx3, INPUT.FORMAT order): "image" resized to the
        evaluation size (CHW float32, 0..255) and the original "height" / "width"."""
        h, w = image.shape[:2]
        nh, nw = eval_resize_shape(h, w, self.eval_size)
        if (nh, nw) != (h, w):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
                "height": h, "width": w}


def check_label_matches(label_path: str, image_path: str, w: int, h: int):
    """Refuse a label of another size or channel count than its image before scoring, where
    numpy would fail with a broadcast error naming no file. Reads the PNG header only."""
    try:
        with Image.open(label_path) as img:
            (lw, lh), bands = img.size, len(img.getbands())
    except Exception as e:
        raise OSError(f"cannot read label {label_path}: {type(e).__name__}: {e}") from e
    if (lw, lh) != (w, h) or bands != 1:
        raise UserError(
            f"label {label_path} is {lw}x{lh} with {bands} channel(s) but its image {image_path} "
            f"is {w}x{h} (W x H): evaluation needs a single-channel label of the image's size; "
            f"rerun the dataset's preparation script (datasets/README.md) or replace the pair")


def label_loader(num_classes: int, ignore_label: int):
    """A label reader for SemSegEvaluator that works with numpy 1 and 2 (no copy=False) and
    refuses values that are neither a class nor ignore, naming the file: such a value would
    otherwise be counted silently into the confusion matrix."""

    def load(path, dtype=int):
        with open(path, "rb") as f:
            try:
                label = np.asarray(Image.open(f)).astype(dtype)
            except Exception as e:
                raise OSError(f"cannot read label {path}: {type(e).__name__}: {e}") from e
        if label.ndim != 2:  # a colour PNG: the score would fail on a numpy broadcast
            raise UserError(f"label {path} has shape {label.shape}; evaluation needs a single-"
                             "channel map of class ids: run the dataset's preparation script "
                             "(datasets/README.md)")
        bad = np.unique(label[(label != ignore_label) & ((label < 0) | (label >= num_classes))])
        if bad.size:
            raise UserError(f"label {path} holds values {bad[:10].tolist()} outside 0.."
                             f"{num_classes - 1} and ignore {ignore_label}: run the dataset's "
                             "preparation script (datasets/README.md)")
        return label

    return load


def semantic_test_loader(cfg, name: str):
    """detectron2's test loader over ``name``, each image at the dataset's evaluation size (or
    this run's TEST.EVAL_SIZE)."""
    mapper = DGTestMapper(cfg.INPUT.FORMAT, eval_size_of(cfg, name)[0])
    dicts = dataset_dicts_checked(name)  # an empty split: say which and where it looked
    return build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)


def semantic_evaluator(name: str, output_dir: Optional[str] = None) -> SemSegEvaluator:
    """detectron2's SemSegEvaluator with a label reader that checks the labels' values. On a
    panoptic dataset (the metadata's id maps split things from stuff) every class is mapped
    back to its dataset id: SemSegEvaluator looks up the stuff map alone and would fail on the
    first predicted thing."""
    meta = MetadataCatalog.get(name)
    evaluator = SemSegEvaluator(name, output_dir=output_dir,
                                sem_seg_loading_fn=label_loader(len(meta.stuff_classes), meta.ignore_label))
    things = meta.get("thing_dataset_id_to_contiguous_id", None)
    stuff = meta.get("stuff_dataset_id_to_contiguous_id", None)
    if things and stuff:
        evaluator._contiguous_id_to_dataset_id = {c: d for d, c in {**things, **stuff}.items()}
    return evaluator
