"""Corruption robustness (Cityscapes-C style) of one model on any registered semantic target:
mIoU per corruption and severity, their mean (mPC) and its ratio to the clean mIoU (rPC).

Each image is corrupted at evaluation time, before the resize to the target's evaluation size,
deterministically (rein_d2.data.corruptions), and optionally cached on disk.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from tabulate import tabulate

from ..data.corruptions import cached_corruption
from ..data.dataset_mappers.instance import read_image_checked
from ..data.datasets.common import dataset_dicts_checked
from ..utils.files import save_figure_atomic, write_csv_atomic, write_json_atomic
from .miou import by_convention
from .protocol import eval_size_of
from .semantic import DGTestMapper, semantic_evaluator

__all__ = ["CorruptedTestMapper", "RobustnessSummary", "evaluate_robustness"]

logger = logging.getLogger(__name__)


class CorruptedTestMapper(DGTestMapper):
    """The DG test mapper with the image corrupted first (in RGB, at its own size, before the
    resize to the evaluation size)."""

    def __init__(self, image_format, eval_size, corruption, severity, seed=0, cache_dir=None):
        super().__init__(image_format, eval_size)
        self.corruption, self.severity, self.seed, self.cache_dir = corruption, severity, seed, cache_dir

    def read(self, d):
        rgb = read_image_checked(d["file_name"], "RGB")
        bad = cached_corruption(rgb, self.corruption, self.severity, self.seed, d["file_name"],
                                self.cache_dir)
        return bad if self.image_format == "RGB" else np.ascontiguousarray(bad[:, :, ::-1])


@dataclass
class RobustnessSummary:
    dataset: str
    clean: float  # mIoU on the clean images
    miou: Dict[str, Dict[int, float]] = field(default_factory=dict)  # corruption -> severity -> mIoU

    @property
    def mpc(self) -> float:
        """Mean performance under corruption: the mean mIoU over corruptions and severities."""
        values = [v for sev in self.miou.values() for v in sev.values()]
        return float(np.mean(values)) if values else float("nan")

    @property
    def rpc(self) -> float:
        """Relative performance under corruption: mPC / clean mIoU."""
        return self.mpc / self.clean if self.clean else float("nan")

    def severities(self) -> List[int]:
        return sorted({s for sev in self.miou.values() for s in sev})

    def table(self) -> str:
        sev = self.severities()
        rows = [[c] + [self.miou[c].get(s) for s in sev] + [float(np.mean(list(self.miou[c].values())))]
                for c in self.miou]
        text = tabulate(rows, headers=["corruption"] + [f"s{s}" for s in sev] + ["mean"],
                        tablefmt="pipe", floatfmt=".2f")
        return (f"{self.dataset}: clean mIoU {self.clean:.2f}, mPC {self.mpc:.2f}, "
                f"rPC {100 * self.rpc:.1f}%\n" + text)

    def write(self, output_dir: str) -> Dict[str, str]:
        os.makedirs(output_dir, exist_ok=True)
        base = os.path.join(output_dir, f"robustness_{self.dataset}")
        paths = {ext: f"{base}.{ext}" for ext in ("json", "csv", "png")}
        write_json_atomic(paths["json"], {"dataset": self.dataset, "clean_mIoU": self.clean, "mPC": self.mpc,
                                          "rPC": self.rpc, "mIoU": {c: {str(s): v for s, v in sev.items()}
                                                                    for c, sev in self.miou.items()}})
        write_csv_atomic(paths["csv"], [["corruption", "severity", "mIoU"], ["clean", 0, f"{self.clean:.4f}"],
                                        *([c, s, f"{v:.4f}"] for c, sev in self.miou.items() for s, v in sev.items()),
                                        ["mPC", "", f"{self.mpc:.4f}"], ["rPC", "", f"{self.rpc:.4f}"]])
        self._heatmap(paths["png"])
        return paths

    def _heatmap(self, path: str):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sev = self.severities()
        grid = np.array([[self.miou[c].get(s, np.nan) for s in sev] for c in self.miou])
        fig, ax = plt.subplots(figsize=(1.0 * len(sev) + 3, 0.35 * len(self.miou) + 1.5))
        vmax = max(self.clean, np.nanmax(grid), 1e-6)
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(sev)), [f"severity {s}" for s in sev])
        ax.set_yticks(range(len(self.miou)), list(self.miou))
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                colour = "k" if grid[i, j] > 0.6 * vmax else "w"  # readable on light and dark cells
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color=colour, fontsize=8)
        ax.set_title(f"{self.dataset}: mIoU under corruption\nclean {self.clean:.1f}, mPC "
                     f"{self.mpc:.1f}, rPC {100 * self.rpc:.0f}%", fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        try:
            save_figure_atomic(fig, path)
        finally:
            plt.close(fig)


def evaluate_robustness(cfg, model, dataset: str, corruptions: Sequence[str], severities: Sequence[int],
                        output_dir: Optional[str] = None, seed: int = 0,
                        cache_dir: Optional[str] = None) -> RobustnessSummary:
    """Score ``model`` on ``dataset`` clean and under every corruption x severity (mIoU by
    TEST.MIOU_CONVENTION, each image at TEST.EVAL_SIZE or the dataset's own size)."""
    dicts = dataset_dicts_checked(dataset)
    eval_size = eval_size_of(cfg, dataset)[0]  # TEST.EVAL_SIZE or the dataset's own
    classes = MetadataCatalog.get(dataset).stuff_classes

    def score(mapper):
        loader = build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
        evaluator = semantic_evaluator(dataset)
        result = inference_on_dataset(model, loader, evaluator)
        if not comm.is_main_process():
            return float("nan")
        return by_convention(result, evaluator, classes, cfg.TEST.MIOU_CONVENTION)["sem_seg"]["mIoU"]

    summary = RobustnessSummary(dataset, score(DGTestMapper(cfg.INPUT.FORMAT, eval_size)))
    for name in corruptions:
        summary.miou[name] = {int(s): score(CorruptedTestMapper(cfg.INPUT.FORMAT, eval_size, name, int(s),
                                                                 seed, cache_dir))
                              for s in severities}
    if output_dir and comm.is_main_process():
        try:
            summary.write(output_dir)
        except OSError:  # (a full disk) the scores are shown, not lost
            logger.error("Not saved to %s:\n%s", output_dir, summary.table())
            raise
    return summary
