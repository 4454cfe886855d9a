"""tools/benchmark.py runs end to end on a small setting and writes its table, JSON and plot
(the measurements themselves are the benchmark's business, not asserted here)."""
import json
import os

import torch

import benchmark  # dev/benchmark.py, which tools/benchmark.py runs
from conftest import REPO


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


def test_profile_replays_every_component_of_a_step():
    import benchmark_profile as bp
    from test_meta_arch import mini_model, sample

    model = mini_model().train()
    data = [sample(), sample()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = bp.profile_step(model, data, "cpu", repeats=1)
    # one recorded call per block / encoder layer / decoder layer, one match per image and
    # prediction (the first one and one per decoder layer)
    assert rows["backbone: blocks"]["calls"] == rows["backbone: Rein"]["calls"] == 4
    assert rows["pixel decoder: deformable attention"]["calls"] == 1
    assert rows["query decoder: masked attention"]["calls"] == 3
    assert rows["query decoder: mask prediction"]["calls"] == 4
    assert rows["criterion: matcher"]["calls"] == 2 * 4
    for name in bp.ORDER:
        assert name in rows, name
    for name in ("backbone: blocks", "backbone: Rein", "pixel decoder: deformable attention",
                 "query decoder (whole)", "criterion (whole)"):
        r = rows[name]
        assert r["forward_s"] > 0 and r["backward_s"] > 0 and r["saved_bytes"] > 0, name
    assert rows["criterion: matcher"]["backward_s"] == 0  # matching has no backward
    head = rows["head (pixel decoder + query decoder + criterion)"]["total_s"]
    assert head == sum(rows[h]["total_s"] for h in bp.HEAD)
    assert rows["step"]["total_s"] > 0
    # the replays leave the model as they found it
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in model.named_parameters())
    lines = bp.profile_table(rows)
    assert any(line.startswith("| pixel decoder: deformable attention | 1 |") for line in lines)


def test_scaling_table_fits_the_growth_exponent():
    import benchmark_profile as bp
    rows = {"crop": [(c, {"step_s": 1e-6 * c * c, "peak_mem": 2.0**20 * c}) for c in (64, 128, 256)]}
    text = "\n".join(bp.scaling_tables(rows))
    assert "time ~ pixels^1.00" in text and "peak memory ~ pixels^0.50" in text


def test_baseline_measures_a_worktree_of_the_revision_side_by_side(tmp_path, monkeypatch):
    """--baseline HEAD: each row runs on a detached worktree of HEAD and on this checkout, the
    report gives ratios, the seeded step agrees exactly (same code), and the worktree is gone."""
    import subprocess

    monkeypatch.setattr(benchmark, "analysis_rows", lambda args: [
        ("compare", "frozen backbone", benchmark.measure_backbone, ("small", "frozen backbone", 1, 32, "cpu", 1))])
    results = benchmark.main(["--sizes", "small", "--baseline", "HEAD", "--batch", "1", "--crop", "32",
                              "--device", "cpu", "--output", str(tmp_path)])
    (_, _, row), = results
    base, cur = row["baseline"], row["current"]
    assert "error" not in base and "error" not in cur, row
    assert os.path.basename(base["rein_d2"]).startswith("rein_d2_baseline_")
    assert cur["rein_d2"] == REPO
    text = (tmp_path / "cpu_profile.md").read_text()
    assert "| frozen backbone | time |" in text and "x |" in text
    assert "layer) differ by at most 0.0e+00" in text and "them by at most 0.0e+00" in text
    listed = subprocess.run(["git", "-C", REPO, "worktree", "list"], capture_output=True, text=True).stdout
    assert base["rein_d2"] not in listed and not os.path.exists(base["rein_d2"])


def _compile_probe(size):
    """A row that reports the MODEL.COMPILE its process's models would get."""
    mode = benchmark._cfg(size, "Rein", "cpu").MODEL.COMPILE
    return {"step_s": 0.5 if mode else 1.0, "mode": mode}


def test_compile_rows_run_eager_and_compiled_in_separate_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "analysis_rows", lambda args: [("compile", "probe", _compile_probe, ("small",))])
    (_, _, row), = benchmark.main(["--sizes", "small", "--compile", "max-autotune", "--device", "cpu",
                                   "--output", str(tmp_path)])
    assert row["eager"]["mode"] == "" and row["current"]["mode"] == "max-autotune"
    text = (tmp_path / "cpu_profile.md").read_text()
    assert "| row | measure | eager | compiled | ratio |" in text
    assert "| probe | time | 1.00 s | 0.50 s | 0.50x |" in text
