"""End-to-end learning on real labelled street frames (Debian's labelme-examples): a small
Rein model (DINOv2-S + Rein, random init, frozen VFM) must reach 70 mIoU on its five training
frames within a bounded number of iterations. tools/learn_street_frames.py is the same run as
a tool. The frames are trained and scored at 256x144 and the bound is in iterations, not
seconds: the same run passes or fails on a fast or a busy machine (the 512x288 run with a
time budget hit pytest's 300 s limit on a loaded 2-core machine)."""
import pytest

from conftest import config_path
import learn_street_frames as tool  # dev/, which tools/learn_street_frames.py runs


@pytest.mark.skipif(not (tool.FRAMES / "JPEGImages").is_dir(),
                    reason=f"{tool.FRAMES} missing: install Debian's labelme-examples (make setup does)")
# 51 s on a quiet 2-core machine, 292 s at load average 15-19 there: pytest.ini's 300 s guard
# against deadlocks would fail it on a machine that is merely busy
@pytest.mark.timeout(900)
def test_small_rein_model_reaches_70_miou_on_real_street_frames():
    cfg = tool.build_cfg(config_path("misc/street_frames_dinov2_s.yaml"), ["MODEL.DEVICE", "cpu"])
    frames = tool.load_frames(tool.FRAMES)
    assert len(frames) == 5 and frames[0][0].shape == (563, 1000, 3)
    # Measured (2-core AMD EPYC): 87.5 mIoU at iteration 50, 54.9 at 45; 80 leaves a margin
    # for other CPUs' float32 rounding.
    summary = tool.train(cfg, frames, size=(256, 144), max_iter=cfg.SOLVER.MAX_ITER,
                         time_budget=float("inf"), batch_size=2, eval_period=5, target=70.0,
                         log=lambda *_: None, stop_after=80)
    best = summary["best"]
    assert summary["reached_target"], summary["history"]
    assert len(best["iou"]) == 3 and min(best["iou"]) > 30  # car and truck learned, not just road
    # Five iterations in, the model is far from it: the figure is earned by training.
    assert summary["history"][0]["miou"] < 50


def test_missing_frames_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install labelme-examples"):
        tool.load_frames(tmp_path)
