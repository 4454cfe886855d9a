"""Domain-generalization evaluation: one model on several target datasets in one run, each at
its own evaluation size (docs/method.md section 5), and a summary as a table, JSON, CSV and a bar
chart. Semantic datasets are scored by detectron2's SemSegEvaluator at the label's resolution
(mIoU, mAcc, aAcc, per-class IoU); panoptic and instance datasets by the evaluators of their
evaluator_type (rein_d2.evaluation.EVALUATORS: PQ, mask AP, and mIoU where they carry
semantic labels). Every summary carries its protocol record (rein_d2.evaluation.protocol)."""
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset
from detectron2.utils import comm
from tabulate import tabulate

from ..data.datasets.common import dataset_dicts_checked
from ..utils.files import save_figure_atomic, write_csv_atomic, write_json_atomic
from .evaluators import INSTANCE_KINDS, PANOPTIC_KINDS, build_evaluator
from .miou import CLASS_SUBSETS, by_convention, check_subsets, subset_miou
from .progress import ProgressLog
from .protocol import eval_size_of, inference_record, run_record, target_record
from .semantic import (DGTestMapper, check_label_matches, eval_resize_shape, label_loader,
                       semantic_evaluator, semantic_test_loader)

__all__ = ["DGSummary", "DGTestMapper", "check_label_matches", "evaluate_domain_generalization",
           "eval_resize_shape", "label_loader", "semantic_evaluator", "semantic_test_loader",
           "source_datasets"]

logger = logging.getLogger(__name__)

# Summary columns taken from detectron2's results: (result key, metric, column), in table order.
# Panoptic quality from COCOPanopticEvaluator, COCO mask (and, where scored, box) AP from
# COCOEvaluator, cityscapesscripts' AP (another definition: its own columns) from
# CityscapesAPEvaluator; mIoU, mAcc and aAcc come from "sem_seg".
MASK_METRICS = [("panoptic_seg", k, k) for k in ("PQ", "PQ_th", "PQ_st", "SQ", "RQ")] + [
    ("segm", "AP", "AP"), ("segm", "AP50", "AP50"), ("cityscapes_segm", "AP", "cityscapes_AP"),
    ("cityscapes_segm", "AP50", "cityscapes_AP50"), ("bbox", "AP", "box_AP"), ("bbox", "AP50", "box_AP50")]
SEMANTIC_COLUMNS = ["mIoU", "mAcc", "aAcc"]
# The one metric of each kind drawn in dg_summary.png.
HEADLINE = ["PQ", "AP", "cityscapes_AP", "box_AP", "mIoU"]


@dataclass
class DGSummary:
    """Per-dataset scores of one model. Datasets of a training domain (``source``) are reported
    on their own rows and left out of the means, which are over the target domains only.
    ``classes`` is the label space all datasets share (per-class IoU is over it)."""
    classes: List[str]
    miou: Dict[str, float] = field(default_factory=dict)  # dataset -> mIoU (percent)
    iou: Dict[str, List[float]] = field(default_factory=dict)  # dataset -> per-class IoU
    macc: Dict[str, float] = field(default_factory=dict)  # dataset -> mean class accuracy
    aacc: Dict[str, float] = field(default_factory=dict)  # dataset -> pixel accuracy (aAcc)
    source: List[str] = field(default_factory=list)  # datasets of a training domain
    # column of MASK_METRICS (PQ, AP, ...) -> dataset -> value (percent)
    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # column of a class subset (mIoU16, mIoU13) -> dataset -> mIoU over the subset (percent)
    subset_miou: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # how the scores were obtained: {"run": run_record(...), "targets": {dataset: target_record}}
    protocol: Dict = field(default_factory=dict)

    @property
    def names(self) -> List[str]:
        """Every dataset scored, in the order of evaluation."""
        seen = dict.fromkeys(self.miou)
        for scores in self.metrics.values():
            seen.update(dict.fromkeys(scores))
        return list(seen)

    @property
    def targets(self) -> List[str]:
        return [n for n in self.names if n not in self.source]

    @property
    def columns(self) -> List[str]:
        """The metrics of this run: panoptic / mask ones that were scored, then mIoU (and that of
        each class subset asked for), mAcc, aAcc where a dataset was scored semantically."""
        semantic = SEMANTIC_COLUMNS[:1] + list(self.subset_miou) + SEMANTIC_COLUMNS[1:]
        return [c for _, _, c in MASK_METRICS if c in self.metrics] + (semantic if self.miou else [])

    def scores(self, column: str) -> Dict[str, float]:
        """dataset -> value of one column (datasets without it are absent)."""
        semantic = {"mIoU": self.miou, "mAcc": self.macc, "aAcc": self.aacc, **self.subset_miou}
        return semantic[column] if column in semantic else self.metrics.get(column, {})

    def _mean(self, scores: Dict[str, float]) -> float:
        values = [scores[n] for n in self.targets if n in scores]
        return float(np.mean(values)) if values else float("nan")

    def mean(self, column: str) -> float:
        """``column`` averaged over the target domains that have it."""
        return self._mean(self.scores(column))

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

    def add(self, name: str, results: Dict[str, Dict[str, float]]):
        """Record detectron2's results of one dataset ({"sem_seg": ..., "panoptic_seg": ...,
        "segm": ..., "bbox": ...}, as inference_on_dataset returns them)."""
        if "sem_seg" in results:
            r = results["sem_seg"]
            self.miou[name] = r["mIoU"]
            self.iou[name] = [r[f"IoU-{c}"] for c in self.classes]
            self.macc[name], self.aacc[name] = r["mACC"], r["pACC"]
        for key, metric, column in MASK_METRICS:
            if metric in results.get(key, {}):
                self.metrics.setdefault(column, {})[name] = results[key][metric]

    def results(self) -> Dict[str, Dict[str, float]]:
        """dataset -> {column: value}, then "mean_over_targets" (when there are targets): the
        form detectron2's print_csv_format and EvalHook take."""
        out = {n: {c: self.scores(c)[n] for c in self.columns if n in self.scores(c)} for n in self.names}
        if self.targets:
            out["mean_over_targets"] = {c: self.mean(c) for c in self.columns}
        return out

    def protocol_table(self) -> str:
        """The protocol record as text: the run's line, then a row per dataset."""
        if not self.protocol:
            return ""
        run = self.protocol["run"]
        rev = run["rein_d2"]["git_revision"]
        rev = rev if " " in rev else rev[:12] + ("-dirty" if rev.endswith("-dirty") else "")
        files = ", ".join(f"{w['path']} (sha256 {w['sha256'][:12]})" for w in run["weight_files"]) or "none"
        head = (f"protocol: seed {run['seed']}, setting {run['setting_sha256'][:12]}, config "
                f"{run['config_sha256'][:12]}, rein_d2 {run['rein_d2']['version']} (git {rev})\n"
                f"weights: {files}; in memory sha256 {run['model_sha256'][:12]}")
        rows = []
        for n, t in self.protocol["targets"].items():
            size = t["evaluation_size"]
            size = "x".join(map(str, size)) if isinstance(size, list) else size
            windows = (f"slide {'x'.join(map(str, t['crop']))} / {'x'.join(map(str, t['stride']))}"
                       if t["mode"] == "slide" else "whole")
            tta = "no" if not t["tta"] else (f"sizes {','.join(map(str, t['tta']['min_sizes']))}"
                                             f"{' + flip' if t['tta']['flip'] else ''}")
            rows.append([n, f"{size} ({t['evaluation_size_from']})", windows, tta, t["label_resolution"],
                         t["class_set"], t["miou_convention"]])
        headers = ["dataset", "evaluation size", "inference", "TTA", "labels", "classes", "mIoU convention"]
        return head + "\n" + tabulate(rows, headers=headers, tablefmt="pipe")

    def table(self) -> str:
        columns = self.columns
        rows = [[n, self.role(n)] + [self.scores(c).get(n) for c in columns] for n in self.names]
        rows.append(["mean over targets", ""] + [self.mean(c) for c in columns])
        fmt = dict(tablefmt="pipe", floatfmt=".2f")
        text = tabulate(rows, headers=["dataset", "domain"] + columns, **fmt)
        if self.protocol:
            text = self.protocol_table() + "\n\n" + text
        if self.iou:
            per_class = [[c] + [self.iou[n][i] for n in self.iou] for i, c in enumerate(self.classes)]
            text += "\n\n" + tabulate(per_class, headers=["class"] + list(self.iou), **fmt)
        return text

    def write(self, output_dir: str) -> Dict[str, str]:
        """dg_summary.json / .csv / .png under ``output_dir``; returns their paths."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {ext: os.path.join(output_dir, f"dg_summary.{ext}") for ext in ("json", "csv", "png")}
        data = {"mIoU": self.miou, "mAcc": self.macc, "aAcc": self.aacc,
                "source": self.source, "targets": self.targets,
                "mean_mIoU": self.mean_miou, "mean_mAcc": self.mean_macc,
                "mean_aAcc": self.mean_aacc, "classes": self.classes, "IoU": self.iou}
        for column, scores in {**self.metrics, **self.subset_miou}.items():
            data[column], data[f"mean_{column}"] = scores, self.mean(column)
        if self.protocol:
            data["protocol"] = self.protocol
        write_json_atomic(paths["json"], data)  # each file whole or absent (a full disk: one line)
        columns, nan = self.columns, float("nan")
        rows = [["dataset", "domain"] + columns + (self.classes if self.iou else [])]
        for n in self.names:
            per_class = self.iou.get(n, [nan] * len(self.classes)) if self.iou else []
            rows.append([n, self.role(n)] + [f"{self.scores(c).get(n, nan):.4f}" for c in columns]
                        + [f"{v:.4f}" for v in per_class])
        rows.append(["mean over targets", ""] + [f"{self.mean(c):.4f}" for c in columns])
        write_csv_atomic(paths["csv"], rows)
        if not self._plot(paths["png"]):
            del paths["png"]
        return paths

    def _plot(self, path: str) -> bool:
        """One bar chart per headline metric of the run; False when there is none to draw."""
        fig = self.figure()
        if fig is None:
            return False
        import matplotlib.pyplot as plt

        try:
            save_figure_atomic(fig, path)
        finally:
            plt.close(fig)
        return True

    def figure(self):
        """The chart of dg_summary.png (a matplotlib Figure), or None without a headline metric.
        Dataset names wrap at their underscores and each bar gets the width of its longest
        line, so that the x-axis labels never run into each other."""
        panels = [c for c in HEADLINE if c in self.columns]
        if not panels:
            return None
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        labels = {c: [_wrap(n) + ("\n(source)" if n in self.source else "") for n in self.scores(c)]
                  + ["mean over\ntargets"] for c in panels}
        # inches per bar: the longest label line at about 0.08 in per character (10 pt) plus a
        # gap; one panel per row, so that the figure stays as wide as one panel
        lines = [line for ls in labels.values() for label in ls for line in label.split("\n")]
        slot = max(1.2, 0.08 * max(map(len, lines)) + 0.3)
        depth = max(label.count("\n") for ls in labels.values() for label in ls)
        fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(
            slot * max(map(len, labels.values())) + 1.2, len(panels) * (3.2 + 0.2 * depth)))
        for ax, column in zip(axes[:, 0], panels):
            scores = self.scores(column)
            values = list(scores.values()) + [self.mean(column)]
            colours = ["#999999" if n in self.source else "#4c72b0" for n in scores] + ["#dd8452"]
            bars = ax.bar(range(len(values)), values, color=colours, tick_label=labels[column])
            ax.bar_label(bars, fmt="%.1f")
            ax.set_ylabel(f"{column} (%)")
            ax.set_ylim(0, 100)
            ax.set_title(f"Domain generalization: {column} per target")
        fig.tight_layout()
        return fig


def _wrap(name: str, width: int = 14) -> str:
    """A dataset name longer than ``width`` characters on lines of about equal length, broken
    after underscores."""
    target = math.ceil(len(name) / math.ceil(len(name) / width)) + 4
    lines = [""]
    for part in name.split("_"):
        piece = "_" + part if lines[-1] else part
        if lines[-1] and len(lines[-1]) + len(piece) > target:
            lines[-1] += "_"
            lines.append(part)
        else:
            lines[-1] += piece
    return "\n".join(lines)


def source_datasets(dataset_names: Sequence[str], train_names: Sequence[str]) -> List[str]:
    """The datasets of ``dataset_names`` whose metadata ``domain`` is that of a training
    dataset (e.g. cityscapes_rein_val when training on cityscapes_rein_train)."""
    domains = {MetadataCatalog.get(n).get("domain", None) for n in train_names} - {None}
    return [n for n in dataset_names if MetadataCatalog.get(n).get("domain", None) in domains]


def label_space(name: str) -> List[str]:
    """The classes a model scores on ``name``: the things of an instance dataset, else the
    stuff_classes of a semantic or panoptic one (every class, things included)."""
    meta = MetadataCatalog.get(name)
    key = "thing_classes" if meta.get("evaluator_type", None) in INSTANCE_KINDS else "stuff_classes"
    classes = meta.get(key, None)
    if classes is None:
        raise ValueError(f"dataset '{name}' has no {key} in its metadata: register it with its "
                         "class names")
    return list(classes)


def default_eval_size(cfg) -> Optional[Sequence[int]]:
    """Evaluation size of a panoptic or instance dataset without its own ``eval_size``: the
    config's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST resize (detectron2's test resize; None: as is)."""
    return (cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST) if cfg.INPUT.MIN_SIZE_TEST else None


def evaluate_domain_generalization(cfg, model, dataset_names: Sequence[str],
                                   output_dir: Optional[str] = None,
                                   weight_files: Optional[Sequence[str]] = None) -> DGSummary:
    """Evaluate ``model`` on every dataset of ``dataset_names`` and return (and, with
    ``output_dir``, write) the summary. Each image is resized to its dataset's ``eval_size``
    (TEST.EVAL_SIZE overrides it for the run; panoptic and instance datasets without one: the
    config's test size) and scored at its label's resolution. Semantic datasets give mIoU (by
    TEST.MIOU_CONVENTION, and over each TEST.CLASS_SUBSETS); panoptic and instance datasets
    (evaluator types in PANOPTIC_KINDS / INSTANCE_KINDS) give PQ / mask AP (and mIoU) as the
    model's MODEL.MASK2FORMER.TEST flags ask. All datasets must share one label space. Datasets
    of a cfg.DATASETS.TRAIN domain are reported as source, outside the mean. The summary's
    protocol record names ``weight_files`` (default: MODEL.WEIGHTS, MODEL.TRAINED_WEIGHTS)."""
    if not dataset_names:
        raise ValueError("no target datasets given (DATASETS.TEST is empty)")
    # every split loaded (an empty one: say which and where it looked) and the label spaces
    # compared before the first inference (load_coco_json fills the metadata on loading)
    dicts = {name: dataset_dicts_checked(name) for name in dataset_names}
    classes = label_space(dataset_names[0])
    for name in dataset_names[1:]:
        if label_space(name) != classes:
            raise ValueError(f"{name} has other classes than {dataset_names[0]}: a DG summary "
                             "needs one label space")
    check_subsets(classes, cfg.TEST.CLASS_SUBSETS)  # a subset the label space lacks: before inference
    summary = DGSummary(classes, source=source_datasets(dataset_names, cfg.DATASETS.TRAIN))
    inference = inference_record(cfg, model)
    targets = {}
    for name in dataset_names:
        kind = MetadataCatalog.get(name).get("evaluator_type", None)
        out = os.path.join(output_dir, name) if output_dir else None
        if kind in PANOPTIC_KINDS + INSTANCE_KINDS:
            evaluator = build_evaluator(cfg, name, out)
            eval_size, size_from = eval_size_of(cfg, name, default_eval_size(cfg))
        else:
            evaluator, (eval_size, size_from) = semantic_evaluator(name, out), eval_size_of(cfg, name)
        targets[name] = target_record(cfg, name, eval_size, size_from, inference, classes, kind or "sem_seg")
        loader = build_detection_test_loader(dicts[name], mapper=DGTestMapper(cfg.INPUT.FORMAT, eval_size),
                                             num_workers=cfg.DATALOADER.NUM_WORKERS)
        logger.info("Evaluating %s (%s, %d of %d): %d images", name, summary.role(name),
                    dataset_names.index(name) + 1, len(dataset_names), len(dicts[name]))
        progress = ProgressLog(name, len(loader))
        results = inference_on_dataset(model, loader, DatasetEvaluators([progress, evaluator]))
        if not comm.is_main_process():
            continue  # detectron2 evaluators gather results on the main process only
        summary.add(name, by_convention(results, evaluator, classes, cfg.TEST.MIOU_CONVENTION))
        if name in summary.iou:
            for subset in cfg.TEST.CLASS_SUBSETS:
                column = CLASS_SUBSETS[subset][0]
                summary.subset_miou.setdefault(column, {})[name] = subset_miou(summary.iou[name], classes, subset)
        scored = {c: summary.scores(c)[name] for c in summary.columns if name in summary.scores(c)}
        logger.info("%s (%s): %s", name, summary.role(name),
                    ", ".join(f"{c} {v:.2f}" for c, v in scored.items() if not math.isnan(v)) or "no scores")
    if comm.is_main_process():
        summary.protocol = {"run": run_record(cfg, model, classes, weight_files), "targets": targets}
        if output_dir:
            try:
                summary.write(output_dir)
            except OSError:  # (a full disk) the scores of a long evaluation are shown, not lost
                logger.error("Domain generalization, not saved to %s:\n%s", output_dir, summary.table())
                raise
    return summary

