"""tools/benchmark.py runs end to end on a small setting and writes its table, JSON and plot
(the measurements themselves are the benchmark's business, not asserted here)."""
import json
import os
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402


def test_benchmark_writes_a_side_by_side_report(tmp_path):
    benchmark.main(["--sizes", "small", "--methods", "Rein", "full fine-tuning", "--crop", "64",
                    "--batch", "1", "--steps", "1", "--warmup", "0", "--no-inference",
                    "--device", "cpu", "--output", str(tmp_path)])
    rows = json.loads((tmp_path / "cpu.json").read_text())["train"]["small"]
    rein, full = rows["Rein"], rows["full fine-tuning"]
    assert "error" not in rein and "error" not in full, rows
    assert rein["sdpa"] and full["trainable"] == full["total"]
    assert rein["trainable"] < 0.6 * full["trainable"]  # the VFM is frozen (the head trains)
    assert rein["ckpt_bytes"] < full["ckpt_bytes"] and rein["step_s"] > 0 and rein["peak_mem"] > 0
    table = (tmp_path / "cpu.md").read_text()
    assert "| Rein |" in table and "| full fine-tuning |" in table and "1.00x" in table
    assert (tmp_path / "cpu.png").stat().st_size > 0
