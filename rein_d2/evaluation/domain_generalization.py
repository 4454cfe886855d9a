"""Domain-generalization evaluation: one model on several target datasets in one run, each at
its own evaluation size (docs/method.md section 5), scored by detectron2's SemSegEvaluator at the
label's resolution, and summarised as a table, JSON, CSV and a bar chart."""
import csv
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset
from detectron2.utils import comm
from PIL import Image
from tabulate import tabulate

from ..data.dataset_mappers.instance import read_image_checked
from ..data.datasets.common import dataset_dicts_checked

__all__ = ["DGSummary", "DGTestMapper", "evaluate_domain_generalization", "eval_resize_shape",
           "label_loader", "semantic_evaluator", "semantic_test_loader", "source_datasets"]

logger = logging.getLogger(__name__)


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
        nh, nw = eval_resize_shape(h, w, self.eval_size)
        if (nh, nw) != (h, w):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        out = {k: v for k, v in d.items() if k in ("file_name", "sem_seg_file_name", "image_id")}
        out.update(image=torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
                   height=h, width=w)
        return out


def check_label_matches(label_path: str, image_path: str, w: int, h: int):
    """Refuse a label of another size or channel count than its image before scoring, where
    numpy would fail with a broadcast error naming no file. Reads the PNG header only."""
    try:
        with Image.open(label_path) as img:
            (lw, lh), bands = img.size, len(img.getbands())
    except Exception as e:
        raise OSError(f"cannot read label {label_path}: {type(e).__name__}: {e}") from e
    if (lw, lh) != (w, h) or bands != 1:
        raise ValueError(
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
            raise ValueError(f"label {path} has shape {label.shape}; evaluation needs a single-"
                             "channel map of class ids: run the dataset's preparation script "
                             "(datasets/README.md)")
        bad = np.unique(label[(label != ignore_label) & ((label < 0) | (label >= num_classes))])
        if bad.size:
            raise ValueError(f"label {path} holds values {bad[:10].tolist()} outside 0.."
                             f"{num_classes - 1} and ignore {ignore_label}: run the dataset's "
                             "preparation script (datasets/README.md)")
        return label

    return load


@dataclass
class DGSummary:
    """Per-dataset scores of one model. Datasets of a training domain (``source``) are reported
    on their own rows and left out of the means, which are over the target domains only."""
    classes: List[str]
    miou: Dict[str, float] = field(default_factory=dict)  # dataset -> mIoU (percent)
    iou: Dict[str, List[float]] = field(default_factory=dict)  # dataset -> per-class IoU
    macc: Dict[str, float] = field(default_factory=dict)  # dataset -> mean class accuracy
    aacc: Dict[str, float] = field(default_factory=dict)  # dataset -> pixel accuracy (aAcc)
    source: List[str] = field(default_factory=list)  # datasets of a training domain

    @property
    def targets(self) -> List[str]:
        return [n for n in self.miou if n not in self.source]

    def _mean(self, scores: Dict[str, float]) -> float:
        values = [scores[n] for n in self.targets if n in scores]
        return float(np.mean(values)) if values else float("nan")

    @property
    def mean_miou(self) -> float:
        """mIoU averaged over the target domains (the source domain's own is not a DG score)."""
        return self._mean(self.miou)

    @property
    def mean_macc(self) -> float:
        return self._mean(self.macc)

    @property
    def mean_aacc(self) -> float:
        return self._mean(self.aacc)

    def role(self, name: str) -> str:
        return "source" if name in self.source else "target"

    def table(self) -> str:
        rows = [[n, self.role(n), self.miou[n], self.macc.get(n), self.aacc.get(n)] for n in self.miou]
        rows.append(["mean over targets", "", self.mean_miou, self.mean_macc, self.mean_aacc])
        per_class = [[c] + [self.iou[n][i] for n in self.iou] for i, c in enumerate(self.classes)]
        fmt = dict(tablefmt="pipe", floatfmt=".2f")
        return (tabulate(rows, headers=["dataset", "domain", "mIoU", "mAcc", "aAcc"], **fmt) + "\n\n"
                + tabulate(per_class, headers=["class"] + list(self.iou), **fmt))

    def write(self, output_dir: str) -> Dict[str, str]:
        """dg_summary.json / .csv / .png under ``output_dir``; returns their paths."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {ext: os.path.join(output_dir, f"dg_summary.{ext}") for ext in ("json", "csv", "png")}
        with open(paths["json"], "w") as f:
            json.dump({"mIoU": self.miou, "mAcc": self.macc, "aAcc": self.aacc,
                       "source": self.source, "targets": self.targets,
                       "mean_mIoU": self.mean_miou, "mean_mAcc": self.mean_macc,
                       "mean_aAcc": self.mean_aacc, "classes": self.classes, "IoU": self.iou},
                      f, indent=2)
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["dataset", "domain", "mIoU", "mAcc", "aAcc"] + self.classes)
            for n, m in self.miou.items():
                writer.writerow([n, self.role(n), f"{m:.4f}", f"{self.macc.get(n, float('nan')):.4f}",
                                 f"{self.aacc.get(n, float('nan')):.4f}"]
                                + [f"{v:.4f}" for v in self.iou[n]])
            writer.writerow(["mean over targets", "", f"{self.mean_miou:.4f}", f"{self.mean_macc:.4f}",
                             f"{self.mean_aacc:.4f}"])
        self._plot(paths["png"])
        return paths

    def _plot(self, path: str):
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        names = [f"{n}\n(source)" if n in self.source else n for n in self.miou] + ["mean over\ntargets"]
        values = list(self.miou.values()) + [self.mean_miou]
        colours = ["#999999" if n in self.source else "#4c72b0" for n in self.miou] + ["#dd8452"]
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
        bars = ax.bar(names, values, color=colours)
        ax.bar_label(bars, fmt="%.1f")
        ax.set_ylabel("mIoU (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Domain generalization: mIoU per target")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def semantic_test_loader(cfg, name: str):
    """detectron2's test loader over ``name``, each image at the dataset's evaluation size."""
    mapper = DGTestMapper(cfg.INPUT.FORMAT, MetadataCatalog.get(name).get("eval_size", None))
    dicts = dataset_dicts_checked(name)  # an empty split: say which and where it looked
    return build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)


def semantic_evaluator(name: str, output_dir: Optional[str] = None) -> SemSegEvaluator:
    """detectron2's SemSegEvaluator with a label reader that checks the labels' values."""
    meta = MetadataCatalog.get(name)
    return SemSegEvaluator(name, output_dir=output_dir,
                           sem_seg_loading_fn=label_loader(len(meta.stuff_classes), meta.ignore_label))


def source_datasets(dataset_names: Sequence[str], train_names: Sequence[str]) -> List[str]:
    """The datasets of ``dataset_names`` whose metadata ``domain`` is that of a training
    dataset (e.g. cityscapes_rein_val when training on cityscapes_rein_train)."""
    domains = {MetadataCatalog.get(n).get("domain", None) for n in train_names} - {None}
    return [n for n in dataset_names if MetadataCatalog.get(n).get("domain", None) in domains]


def evaluate_domain_generalization(cfg, model, dataset_names: Sequence[str],
                                   output_dir: Optional[str] = None) -> DGSummary:
    """Evaluate ``model`` on every dataset of ``dataset_names`` (registered semantic datasets
    whose metadata may give ``eval_size``) and return (and, with ``output_dir``, write) the
    summary. Datasets of a cfg.DATASETS.TRAIN domain are reported as source, outside the mean."""
    if not dataset_names:
        raise ValueError("no target datasets given (DATASETS.TEST is empty)")
    classes = None
    summary = None
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        if classes is None:
            classes = list(meta.stuff_classes)
            summary = DGSummary(classes, source=source_datasets(dataset_names, cfg.DATASETS.TRAIN))
        elif list(meta.stuff_classes) != classes:
            raise ValueError(f"{name} has other classes than {dataset_names[0]}: a DG summary "
                             "needs one label space")
        evaluator = semantic_evaluator(name, os.path.join(output_dir, name) if output_dir else None)
        result = inference_on_dataset(model, semantic_test_loader(cfg, name), evaluator)
        if not comm.is_main_process():
            continue  # detectron2 evaluators gather results on the main process only
        result = result["sem_seg"]
        summary.miou[name] = result["mIoU"]
        summary.iou[name] = [result[f"IoU-{c}"] for c in classes]
        summary.macc[name], summary.aacc[name] = result["mACC"], result["pACC"]
        logger.info("%s (%s): mIoU %.2f, mAcc %.2f, aAcc %.2f", name, summary.role(name),
                    result["mIoU"], result["mACC"], result["pACC"])
    if output_dir and comm.is_main_process():
        summary.write(output_dir)
    return summary
