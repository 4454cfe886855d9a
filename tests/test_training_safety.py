"""Training fails safe: a failed or killed save keeps the previous checkpoint, a loss spike
stops before it is saved, a resume under another config is refused naming the keys, old
checkpoints are pruned, and typos in flags and choices are named."""
import errno
import os
import signal
import subprocess
import sys

import pytest
import torch

from rein_d2 import load_config
from rein_d2.engine import (CheckpointSaveError, LightCheckpointer, ReinTrainer, TrainingDiverged, lock_output_dir,
                            save_atomic)
from rein_d2.utils.cli import UserError
from conftest import REPO, config_path
from test_meta_arch import mini_model
from test_training import dataset, make_cfg, run  # noqa: F401  (fixture)


def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    model = mini_model()
    ckpt = LightCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()

    def full_disk(obj, f, *a, **k):
        f.write(b"x" * 1000)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointSaveError) as e:
        ckpt.save("model_0000002")
    message = str(e.value)
    assert "model_0000002.pth: No space left on device; it needs about" in message
    assert "MiB are free in" in message and "--resume" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == good


_KILLED_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_meta_arch import mini_model
from rein_d2.engine import LightCheckpointer
ckpt = LightCheckpointer(mini_model(), {out!r})
ckpt.save("model_0000001")
real = torch.save
def killed(obj, f, *a, **k):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the write
torch.save = killed
ckpt.save("model_0000002")
"""


def test_kill_9_during_a_save_leaves_last_checkpoint_and_previous_file_intact(tmp_path):
    code = _KILLED_SAVE.format(tests=os.path.join(REPO, "tests"), out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    # The previous checkpoint loads; the torn temporary file (a unique hidden name, so that two
    # processes never share one) is removed when the next run takes OUTPUT_DIR.
    model = mini_model()
    LightCheckpointer(model, str(tmp_path)).load(str(tmp_path / "model_0000001.pth"))
    assert len(list(tmp_path.glob(".model_0000002.pth.*.tmp"))) == 1
    lock_output_dir(str(tmp_path))
    save_atomic({"a": torch.zeros(1)}, str(tmp_path / "model_0000002.pth"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_loss_spike_stops_training_before_it_is_checkpointed(dataset, tmp_path):  # noqa: F811
    cfg = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 12, "SOLVER.CHECKPOINT_PERIOD", 3,
                   "SOLVER.LOSS_SPIKE_FACTOR", 10.0)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.checkpointer.model

    def spike(module, inputs, losses):
        if trainer.iter == 7 and module.training:
            return {k: v * 1e6 for k, v in losses.items()}

    model.register_forward_hook(spike)
    with pytest.raises(TrainingDiverged) as e:
        trainer.train()
    message = str(e.value)
    assert "loss spike at iteration=7" in message and "SOLVER.LOSS_SPIKE_FACTOR 10" in message
    assert f"{tmp_path}/model_0000005.pth, is kept" in message and "--resume" in message
    # The spiked update never reached a file: iteration 8 would have been saved next.
    assert not (tmp_path / "model_0000008.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"


def test_non_finite_loss_names_the_iteration_and_the_checkpoint(dataset, tmp_path):  # noqa: F811
    cfg = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 2)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.checkpointer.model.register_forward_hook(
        lambda m, i, out: {k: v * float("nan") for k, v in out.items()} if trainer.iter == 3 else None)
    with pytest.raises(TrainingDiverged, match=r"iteration=3.*model_0000001\.pth, is kept"):
        trainer.train()


def test_resume_under_another_config_names_the_keys(dataset, tmp_path):  # noqa: F811
    run(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 3))
    other = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 6, "MODEL.REIN.TOKEN_LENGTH", 12,
                     "SOLVER.BASE_LR", 1e-3)
    with pytest.raises(UserError) as e:
        ReinTrainer(other).resume_or_load(resume=True)
    message = str(e.value)
    assert "MODEL.REIN.TOKEN_LENGTH: 10 in the checkpoint, 12 now" in message
    assert "SOLVER.BASE_LR: 0.005 in the checkpoint, 0.001 now" in message
    assert "SOLVER.MAX_ITER" not in message  # a longer run is a normal resume
    # The same config with a longer schedule resumes.
    longer = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 5)
    assert set(run(longer, resume=True)) == {3, 4}


def test_max_checkpoints_keeps_the_newest(dataset, tmp_path):  # noqa: F811
    run(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 8, "SOLVER.CHECKPOINT_PERIOD", 1,
                 "SOLVER.MAX_CHECKPOINTS", 2))
    kept = sorted(p.name for p in tmp_path.glob("model_*.pth"))
    assert kept == ["model_0000006.pth", "model_final.pth"] or kept == [
        "model_0000006.pth", "model_0000007.pth", "model_final.pth"]
    assert "model_0000005.pth" not in kept


def test_progress_is_printed_before_iteration_20(dataset, tmp_path):  # noqa: F811
    run(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 12))
    lines = (tmp_path / "metrics.json").read_text().splitlines()
    iterations = [int(line.split('"iteration": ')[1].split(",")[0]) for line in lines]
    assert iterations[:3] == [2, 4, 9]


def test_flags_among_overrides_and_typos_in_choices_are_named():
    yaml = config_path("rein_dinov2.yaml")
    with pytest.raises(UserError, match="--resume stands among the KEY VALUE config overrides: put"):
        load_config(yaml, ["SOLVER.MAX_ITER", "10", "--resume"])
    with pytest.raises(UserError, match="SOLVER.AMP.PRECISION is 'fp16'; expected one of float16, bfloat16"):
        load_config(yaml, ["SOLVER.AMP.PRECISION", "fp16"])
    with pytest.raises(UserError, match="KEY VALUE pairs"):
        load_config(yaml, ["SOLVER.MAX_ITER"])
    with pytest.raises(UserError, match="no such file"):
        load_config("configs/nope.yaml")
