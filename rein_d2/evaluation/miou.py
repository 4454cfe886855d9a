"""mIoU conventions and class subsets, from the confusion matrix detectron2's SemSegEvaluator
keeps. Two conventions differ on a class absent from a target's labels: detectron2 leaves it
out of the mean; mmseg (the reference's IoUMetric) counts it as IoU 0 when it is predicted (and
leaves it out only when it is neither in the labels nor predicted). The SYNTHIA subsets are the
DG / UDA literature's mIoU16 (the 19 Cityscapes classes less terrain, truck, train: the classes
SYNTHIA labels) and mIoU13 (those less wall, fence, pole), averaged over the 19-class IoUs."""
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator

from ..data.datasets.common import CITYSCAPES_CLASSES
from ..utils.cli import UserError

__all__ = ["CLASS_SUBSETS", "MIOU_CONVENTIONS", "by_convention", "confusion_matrix", "iou_per_class",
           "subset_miou"]

MIOU_CONVENTIONS = ("detectron2", "mmseg")

_SYNTHIA16 = tuple(c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train"))
# subset name -> (its summary column, its classes)
CLASS_SUBSETS = {
    "synthia16": ("mIoU16", _SYNTHIA16),
    "synthia13": ("mIoU13", tuple(c for c in _SYNTHIA16 if c not in ("wall", "fence", "pole"))),
}


def confusion_matrix(evaluator) -> Optional[np.ndarray]:
    """The summed confusion matrix of the SemSegEvaluator in ``evaluator`` (itself or one of a
    DatasetEvaluators) after evaluate(): [K+1, K+1], rows the prediction, columns the label,
    the last of each the ignored pixels. None where no semantic evaluator scored."""
    found = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    for e in found:
        if isinstance(e, SemSegEvaluator) and getattr(e, "_conf_matrix", None) is not None:
            return e._conf_matrix
    return None


def iou_per_class(conf: np.ndarray, convention: str) -> np.ndarray:
    """Per-class IoU in percent, NaN for a class the convention leaves out of the mean."""
    if convention not in MIOU_CONVENTIONS:
        raise ValueError(f"mIoU convention {convention!r}: expected one of {', '.join(MIOU_CONVENTIONS)}")
    conf = conf[:-1, :-1].astype(float)  # pixels of ignored labels are out of both conventions
    tp, pos_pred, pos_gt = conf.diagonal(), conf.sum(1), conf.sum(0)
    union = pos_gt + pos_pred - tp
    valid = (pos_gt > 0) if convention == "detectron2" else (union > 0)
    iou = np.full(len(tp), np.nan)
    iou[valid] = 100 * tp[valid] / union[valid]
    return iou


def check_subsets(classes: Sequence[str], subsets: Sequence[str]) -> None:
    """Refuse a TEST.CLASS_SUBSETS entry whose classes the label space lacks (before inference)."""
    for subset in subsets:
        column, names = CLASS_SUBSETS[subset]
        missing = [c for c in names if c not in classes]
        if missing:
            raise UserError(f"TEST.CLASS_SUBSETS {subset} ({column}) needs the Cityscapes classes; "
                            f"this label space lacks {', '.join(missing)}")


def subset_miou(iou: Sequence[float], classes: Sequence[str], subset: str) -> float:
    """Mean of the subset's per-class IoUs (NaN ones, left out by the convention, excluded)."""
    check_subsets(classes, [subset])
    names = CLASS_SUBSETS[subset][1]
    values = np.asarray([iou[list(classes).index(c)] for c in names], float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def subset_record(subsets: Sequence[str]) -> Dict[str, Dict]:
    """What the protocol record says of each subset reported: its column and classes."""
    return {s: {"column": CLASS_SUBSETS[s][0], "classes": list(CLASS_SUBSETS[s][1])} for s in subsets}


def by_convention(results: Dict, evaluator, classes: List[str], convention: str) -> Dict:
    """detectron2's results, with mIoU and per-class IoU recomputed from the confusion matrix
    under ``convention`` (detectron2's own: as they are)."""
    conf = confusion_matrix(evaluator) if "sem_seg" in results else None
    if convention == "detectron2" or conf is None:
        return results
    iou = iou_per_class(conf, convention)
    sem_seg = dict(results["sem_seg"], mIoU=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"))
    sem_seg.update({f"IoU-{c}": float(v) for c, v in zip(classes, iou)})
    return {**results, "sem_seg": sem_seg}
