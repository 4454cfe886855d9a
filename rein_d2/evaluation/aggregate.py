"""Runs of one setting (e.g. several seeds) summarised as mean ± std per dataset, per metric
and per class, from the dg_summary.json of each run. Runs are only combined when their
protocol records agree on everything but the per-run fields (seed, weights, code revision):
otherwise the figures would mix protocols."""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
from tabulate import tabulate

from ..utils.cli import UserError
from ..utils.files import save_figure_atomic, write_csv_atomic, write_json_atomic
from .domain_generalization import HEADLINE
from .protocol import RUN_FIELDS

__all__ = ["RunAggregate", "aggregate_runs", "load_run"]


def load_run(path: str) -> Dict:
    """The dg_summary.json of a run: ``path`` itself, or in the folder ``path``, or in its
    inference/ folder (train_net's OUTPUT_DIR)."""
    for candidate in (path, os.path.join(path, "dg_summary.json"),
                      os.path.join(path, "inference", "dg_summary.json")):
        if os.path.isfile(candidate):
            break
    else:
        raise UserError(f"{path}: no dg_summary.json there (nor in {path}/inference); give the "
                        "output folders of tools/evaluate_dg.py or train_net.py")
    try:
        with open(candidate) as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{candidate}: not a dg_summary.json ({e}); give the run's output folder "
                        "or its dg_summary.json") from None
    if not isinstance(data, dict) or "protocol" not in data:
        raise UserError(f"{candidate} has no protocol record (written by an older rein_d2): "
                        "evaluate that run again with tools/evaluate_dg.py")
    data["path"] = candidate
    return data


def _setting(data: Dict) -> Dict:
    """What runs of one setting share: the protocol less its per-run fields, and the roles."""
    run = {k: v for k, v in data["protocol"]["run"].items() if k not in RUN_FIELDS}
    return {"targets": data["protocol"]["targets"], "source": data["source"], "run": run}


def _first_difference(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
            found = _first_difference(a[k], b[k], f"{where}{k}.")
            if found:
                return found
        return None
    return None if a == b else (where.rstrip("."), a, b)


def _columns(data: Dict) -> List[str]:
    """The summary's metric columns: each key with a per-dataset dict and a mean_ entry."""
    return [k for k, v in data.items() if isinstance(v, dict) and f"mean_{k}" in data]


def _mean_std(values: Sequence[float]):
    """Mean and sample std (ddof 1) of the runs that have a value; NaN where too few do."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else float("nan")
    return mean, float(values.std(ddof=1)) if len(values) > 1 else float("nan")


@dataclass
class RunAggregate:
    """Scores of several runs: ``values[column][dataset]`` and ``iou[dataset][class]`` hold one
    value per run (NaN where a run has none); "mean over targets" is a dataset row."""
    paths: List[str]
    seeds: List[int]
    classes: List[str]
    targets: List[str]
    source: List[str]
    values: Dict[str, Dict[str, List[float]]]
    iou: Dict[str, Dict[str, List[float]]]
    protocol: Dict

    @property
    def columns(self) -> List[str]:
        return list(self.values)

    @property
    def rows(self) -> List[str]:
        return self.source + self.targets + ["mean over targets"]

    def stat(self, column: str, row: str):
        return _mean_std(self.values[column].get(row, []))

    def table(self) -> str:
        n = len(self.paths)
        head = (f"{n} runs (seeds {', '.join(map(str, self.seeds))}): mean ± sample std (ddof 1)\n")
        fmt = "{:.2f} ± {:.2f}"
        rows = [[r, "source" if r in self.source else ("" if r.startswith("mean") else "target")]
                + [fmt.format(*self.stat(c, r)) if r in self.values[c] else "" for c in self.columns]
                for r in self.rows]
        text = head + tabulate(rows, headers=["dataset", "domain"] + self.columns, tablefmt="pipe")
        if self.iou:
            per_class = [[c] + [fmt.format(*_mean_std(self.iou[d][c])) for d in self.iou] for c in self.classes]
            text += "\n\n" + tabulate(per_class, headers=["class"] + list(self.iou), tablefmt="pipe")
        return text

    def write(self, output_dir: str) -> Dict[str, str]:
        """aggregate.json / .csv / .png under ``output_dir``; returns their paths."""
        os.makedirs(output_dir, exist_ok=True)
        paths = {ext: os.path.join(output_dir, f"aggregate.{ext}") for ext in ("json", "csv", "png")}
        stats = {c: {r: dict(zip(("mean", "std"), self.stat(c, r)), values=self.values[c][r])
                     for r in self.rows if r in self.values[c]} for c in self.columns}
        per_class = {d: {c: dict(zip(("mean", "std"), _mean_std(v)), values=v) for c, v in by_class.items()}
                     for d, by_class in self.iou.items()}
        write_json_atomic(paths["json"], {"runs": self.paths, "seeds": self.seeds, "std": "sample (ddof 1)",
                                          "metrics": stats, "IoU": per_class, "protocol": self.protocol})
        rows = [["dataset", "metric", "mean", "std"] + [f"run{i + 1}" for i in range(len(self.paths))]]
        rows += [[r, c, *(f"{v:.4f}" for v in (*self.stat(c, r), *self.values[c][r]))]
                 for c in self.columns for r in self.rows if r in self.values[c]]
        rows += [[d, f"IoU-{c}", *(f"{x:.4f}" for x in (*_mean_std(v), *v))]
                 for d, by_class in self.iou.items() for c, v in by_class.items()]
        write_csv_atomic(paths["csv"], rows)
        if not self._plot(paths["png"]):
            del paths["png"]
        return paths

    def _plot(self, path: str) -> bool:
        """The headline metrics per dataset: bars at the mean, error bars of one std."""
        panels = [c for c in HEADLINE if c in self.values]
        if not panels:
            return False
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if any(r in self.values[c] for c in panels)]
        fig, axes = plt.subplots(1, len(panels), figsize=((1.2 * len(rows) + 2) * len(panels), 3.8), squeeze=False)
        for ax, column in zip(axes[0], panels):
            shown = [r for r in rows if r in self.values[column]]
            means, stds = zip(*(self.stat(column, r) for r in shown))
            colours = ["#999999" if r in self.source else "#dd8452" if r.startswith("mean") else "#4c72b0"
                       for r in shown]
            bars = ax.bar([r.replace("mean over targets", "mean over\ntargets") for r in shown], means,
                          yerr=stds, capsize=5, color=colours)
            for bar, m, s in zip(bars, means, stds):  # above the error bar
                ax.text(bar.get_x() + bar.get_width() / 2, m + (s if np.isfinite(s) else 0) + 1,
                        f"{m:.1f}±{s:.1f}", ha="center", va="bottom", fontsize=9)
            ax.set_ylabel(f"{column} (%)")
            ax.set_ylim(0, 110)
            ax.set_title(f"{column}, mean ± std over {len(self.paths)} runs")
            ax.tick_params(axis="x", labelrotation=20)
        fig.tight_layout()
        try:
            save_figure_atomic(fig, path)
        finally:
            plt.close(fig)
        return True


def aggregate_runs(paths: Sequence[str]) -> RunAggregate:
    """Combine the runs at ``paths`` (folders with a dg_summary.json); runs of different
    settings or protocols are refused, naming the first field that differs."""
    if len(paths) < 2:
        raise UserError(f"aggregating needs at least two runs of one setting; got {len(paths)}")
    runs = [load_run(p) for p in paths]
    seen = {}
    for path, data in zip(paths, runs):  # one run given twice (folder and json) would shrink the std
        real = os.path.realpath(data["path"])
        if real in seen:
            raise UserError(f"{seen[real]} and {path} are one run ({data['path']}): give each run once")
        seen[real] = path
    first = _setting(runs[0])
    for data in runs[1:]:
        found = _first_difference(first, _setting(data))
        if found:
            key, a, b = found
            hint = " (the configs differ beyond SEED, OUTPUT_DIR and weights)" if key.endswith("setting_sha256") else ""
            raise UserError(f"{data['path']} is another setting or protocol than {runs[0]['path']}: "
                            f"{key} is {a!r} there and {b!r} here{hint}; aggregate runs of one setting only")
    columns = _columns(runs[0])
    rows = runs[0]["source"] + runs[0]["targets"]
    values = {c: {r: [d[c].get(r, float("nan")) for d in runs] for r in rows if r in runs[0][c]} for c in columns}
    for c in columns:
        values[c]["mean over targets"] = [d[f"mean_{c}"] for d in runs]
    classes = runs[0]["classes"]
    iou = {r: {c: [d["IoU"][r][i] if d["IoU"][r][i] is not None else float("nan") for d in runs]
               for i, c in enumerate(classes)} for r in rows if r in runs[0].get("IoU", {})}
    return RunAggregate(paths=[d["path"] for d in runs], seeds=[d["protocol"]["run"]["seed"] for d in runs],
                        classes=classes, targets=runs[0]["targets"], source=runs[0]["source"],
                        values=values, iou=iou, protocol=first)
