"""tools/aggregate_runs.py on three runs of one setting (three seeds, each a model with its own
threshold), checked against mean and sample std computed by hand; runs of other protocols are
refused."""
import csv
import json
import os
import shutil
import statistics

import numpy as np
import pytest
import torch

from rein_d2.evaluation import evaluate_domain_generalization
from rein_d2.evaluation.aggregate import aggregate_runs
from rein_d2.utils.cli import UserError
from rein_d2.tools import aggregate_runs as aggregate_runs_tool
from test_dg_evaluation import register, target_b
from test_dg_protocol import mini_cfg


class RedAbove(torch.nn.Module):
    """Class 1 where the red channel exceeds ``threshold``, else class 0 (at the label's size)."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(float(threshold)))  # weights differ per run

    def forward(self, inputs):
        out = []
        for x in inputs:
            pred = (x["image"][0] > self.threshold).long()
            scores = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()[None]
            out.append({"sem_seg": torch.nn.functional.interpolate(scores, size=(x["height"], x["width"]))[0]})
        return out


def gradient_target(tmp_path):
    """8x64: red = 4 x column; label class b from column 32 on, class a before."""
    image = np.zeros((8, 64, 3), np.uint8)
    image[..., 0] = 4 * np.arange(64)
    label = np.zeros((8, 64), np.uint8)
    label[:, 32:] = 1
    return register(tmp_path, [image], [label], None)


@pytest.fixture
def runs(tmp_path):
    """Three seeds of one setting on two targets: thresholds 100, 128, 150 -> columns 26, 33,
    38 on predicted as b on the gradient target."""
    names = [gradient_target(tmp_path), target_b(tmp_path)]
    paths = []
    for seed, threshold in ((0, 100), (1, 128), (2, 150)):
        out = tmp_path / f"seed{seed}"
        cfg = mini_cfg("SEED", seed, "OUTPUT_DIR", str(out))
        evaluate_domain_generalization(cfg, RedAbove(threshold), names, str(out))
        paths.append(str(out))
    return names, paths


def test_three_seeds_mean_and_sample_std_by_hand(runs, tmp_path, capsys):
    (grad, b), paths = runs
    # gradient target by hand: a = columns 0-31, b = 32-63
    iou_a = [26 / 32, 32 / 33, 32 / 38]      # predicted a on columns < 26 / 33 / 38
    iou_b = [32 / 38, 31 / 32, 26 / 32]
    miou = [100 * (x + y) / 2 for x, y in zip(iou_a, iou_b)]
    agg = aggregate_runs(paths)
    assert agg.seeds == [0, 1, 2] and agg.targets == [grad, b]
    mean, std = agg.stat("mIoU", grad)
    assert mean == pytest.approx(statistics.mean(miou)) and std == pytest.approx(statistics.stdev(miou))
    mean, std = agg.stat("mIoU", b)  # no red: always class a -> 25 in every run
    assert (mean, std) == (pytest.approx(25), pytest.approx(0))
    over_targets = [(m + 25) / 2 for m in miou]
    assert agg.stat("mIoU", "mean over targets") == (pytest.approx(statistics.mean(over_targets)),
                                                     pytest.approx(statistics.stdev(over_targets)))
    assert agg.values["mIoU"][grad] == pytest.approx(miou)
    per_class = [100 * x for x in iou_b]
    assert agg.iou[grad]["b"] == pytest.approx(per_class)

    assert aggregate_runs_tool.main([*paths, "--output-dir", str(tmp_path / "agg")]) == 0
    printed = capsys.readouterr().out
    assert "3 runs (seeds 0, 1, 2)" in printed
    assert f"{statistics.mean(miou):.2f} ± {statistics.stdev(miou):.2f}" in printed
    data = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert data["metrics"]["mIoU"][grad]["std"] == pytest.approx(statistics.stdev(miou))
    assert data["IoU"][grad]["b"]["mean"] == pytest.approx(statistics.mean(per_class))
    assert data["protocol"]["run"]["classes"] == ["a", "b", "c"] and "seed" not in data["protocol"]["run"]
    rows = list(csv.reader(open(tmp_path / "agg" / "aggregate.csv")))
    assert rows[0] == ["dataset", "metric", "mean", "std", "run1", "run2", "run3"]
    row = next(r for r in rows if r[:2] == [grad, "IoU-b"])
    assert [float(v) for v in row[2:]] == pytest.approx(
        [statistics.mean(per_class), statistics.stdev(per_class), *per_class], abs=1e-4)
    assert (tmp_path / "agg" / "aggregate.png").stat().st_size > 1000


def test_runs_of_another_protocol_or_setting_are_refused(runs, tmp_path):
    (grad, b), paths = runs
    other = tmp_path / "mmseg"
    evaluate_domain_generalization(mini_cfg("TEST.MIOU_CONVENTION", "mmseg"), RedAbove(128), [grad, b], str(other))
    with pytest.raises(UserError, match=rf"mmseg/dg_summary.json is another setting or protocol than .*seed0"
                                        rf"/dg_summary.json: targets.{grad}.miou_convention is 'detectron2' there"):
        aggregate_runs([*paths[:2], str(other)])
    bigger = tmp_path / "size"
    evaluate_domain_generalization(mini_cfg("TEST.EVAL_SIZE", (128, 16)), RedAbove(128), [grad, b], str(bigger))
    with pytest.raises(UserError, match=rf"targets.{grad}.evaluation_size is 'native' there and \[128, 16\]"):
        aggregate_runs([paths[0], str(bigger)])
    lr = tmp_path / "lr"
    evaluate_domain_generalization(mini_cfg("SOLVER.BASE_LR", 0.5), RedAbove(128), [grad, b], str(lr))
    with pytest.raises(UserError, match=r"run.setting_sha256 is .* \(the configs differ beyond SEED"):
        aggregate_runs([paths[0], str(lr)])
    old = tmp_path / "old"
    shutil.copytree(paths[0], old)
    data = json.loads((old / "dg_summary.json").read_text())
    del data["protocol"]
    (old / "dg_summary.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="has no protocol record"):
        aggregate_runs([paths[0], str(old)])
    with pytest.raises(UserError, match="at least two runs"):
        aggregate_runs(paths[:1])
    assert aggregate_runs_tool.main([paths[0], str(tmp_path / "nowhere")]) == 2


def test_a_run_given_twice_and_a_file_that_is_no_summary_are_refused(runs):
    _, paths = runs
    with pytest.raises(UserError, match=r"seed0 and .*seed0/dg_summary.json are one run .*: give each run once"):
        aggregate_runs([paths[0], os.path.join(paths[0], "dg_summary.json"), paths[1]])
    with pytest.raises(UserError, match=r"dg_summary.csv: not a dg_summary.json"):
        aggregate_runs([paths[0], os.path.join(paths[1], "dg_summary.csv")])
