"""No run loses, overwrites or half-writes a user's data (issue 24, items 4-9 and 13):
predict.py on a full disk or a file system that drops what it is given, outputs over inputs,
name clashes, unreadable and 16-bit images, an export killed midway, prepare workers outliving
their parent, out-of-range and 16-bit Cityscapes labels, and a stale corruption cache."""
import errno
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, config_path, error_lines
from rein_d2.tools import export_model, predict
from rein_d2.utils.cli import UserError, refuse_overwrite
from rein_d2.utils.files import OutputWriteError, write_image_atomic
from test_meta_arch import MINI


OPTS = [*map(str, MINI), "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()"]


def photos(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / name)
    return folder


def run_predict(tmp_path, src, *extra, out="pred"):
    return predict.main(["--config-file", config_path("rein_dinov2.yaml"), "--input", str(src),
                                      "--format", "trainid", "--output", str(tmp_path / out), *extra, *OPTS])


def _no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_line_with_the_space_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    src = photos(tmp_path / "in", ["a.png", "b.png"])
    monkeypatch.setattr(os, "write", _no_space)
    assert run_predict(tmp_path, src) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert "it needs about" in errors[0] and "are free in" in errors[0] and "rerun" in errors[0]
    assert os.listdir(tmp_path / "pred") == []  # no final name, no temporary file
    monkeypatch.undo()
    assert run_predict(tmp_path, src) == 0  # the rerun predicts both
    assert "0 already predicted" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "pred")) == ["a.png", "b.png"]


def test_a_write_that_silently_drops_the_data_is_caught_before_the_rename(tmp_path, monkeypatch):
    """What cv2.imwrite did on a full disk: say it wrote, leave a 0-byte file. The read-back
    check refuses it; nothing appears under the final name."""
    monkeypatch.setattr(os, "write", lambda fd, data: len(data))  # accepted, never stored
    with pytest.raises(OutputWriteError, match=r"a.png: the file read back is not what was written \(0 of"):
        write_image_atomic(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    assert os.listdir(tmp_path) == []


def test_a_zero_byte_prediction_left_by_an_earlier_version_is_predicted_again(tmp_path, capsys):
    src = photos(tmp_path / "in", ["a.png"])
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a.png").write_bytes(b"")
    assert run_predict(tmp_path, src) == 0
    assert "0 already predicted" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "pred" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (48, 64)


def test_color_into_the_input_folder_is_refused_and_the_inputs_stay(tmp_path, capsys):
    src = photos(tmp_path / "in", ["a.png", "b.jpg"])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    assert run_predict(tmp_path, src, "--color", str(src)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"--color {src} holds the inputs" in errors[0]
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert not (tmp_path / "pred").exists()
    # --color the --output folder: the colour PNGs would replace the predictions
    assert run_predict(tmp_path, src, "--color", str(tmp_path / "pred")) == 2
    assert "--color" in capsys.readouterr().err


def test_x_png_and_x_jpg_are_named_as_a_clash(tmp_path, capsys):
    src = photos(tmp_path / "in", ["x.png", "x.jpg", "y.png"])
    assert run_predict(tmp_path, src) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert str(src / "x.png") in errors[0] and str(src / "x.jpg") in errors[0] and "rename one" in errors[0]
    assert not (tmp_path / "pred").exists()


def test_an_unreadable_image_is_named_and_skipped_and_the_others_predicted(tmp_path, capsys):
    src = photos(tmp_path / "in", ["a.png", "c.png"])
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a cut download
    assert run_predict(tmp_path, src, "--batch-size", "2") == 2
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert len(errors) == 1 and str(src / "b.png") in errors[0] and "skipped" in errors[0]
    assert "Traceback" not in captured.err
    assert sorted(os.listdir(tmp_path / "pred")) == ["a.png", "c.png"]


def test_a_16_bit_greyscale_image_is_predicted_as_its_8_bit_scaling(tmp_path):
    """Pillow's conversion clips a 16-bit image at 255 (all white); it is scaled instead."""
    grey = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
    a, b = photos(tmp_path / "a", []), photos(tmp_path / "b", [])
    Image.fromarray(grey).save(a / "img.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(b / "img.png")  # the same picture, 16 bits
    assert Image.open(b / "img.png").mode.startswith("I")
    torch.manual_seed(0)  # the same random model for both
    assert run_predict(tmp_path, a, out="pa") == 0
    torch.manual_seed(0)
    assert run_predict(tmp_path, b, out="pb") == 0
    assert (tmp_path / "pa/img.png").read_bytes() == (tmp_path / "pb/img.png").read_bytes()


def test_refuse_overwrite_compares_every_output_by_path_and_by_file(tmp_path):
    weights = tmp_path / "w.pt2"
    weights.write_bytes(b"weights")
    os.symlink(weights, tmp_path / "link.pt2")
    for output in (str(weights), str(tmp_path / "sub" / ".." / "w.pt2"), str(tmp_path / "link.pt2")):
        with pytest.raises(UserError, match="which is the input"):
            refuse_overwrite([str(tmp_path / "x.onnx"), output], [str(weights)], "--output")
    refuse_overwrite([str(tmp_path / "w.onnx")], [str(weights), None], "--output")


_KILLED_EXPORT = """
import os, signal, sys, torch
from rein_d2.tools import export_model
export_model.export_program = lambda module, image: None  # (tracing is not what is tested)
def killed(program, path, *a, **k):
    with open(path, "wb") as f:
        f.write(b"half an export")
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the write
torch.export.save = killed
export_model.main({argv!r})
"""


def _export_argv(tmp_path, *opts):
    return ["--config-file", config_path("rein_dinov2.yaml"), "--output", str(tmp_path / "rein"),
            "--format", "torch_export", "--size", "64", "96", *map(str, MINI), *opts]


def test_export_killed_midway_keeps_the_earlier_file_and_output_over_weights_is_refused(tmp_path, capsys):
    import subprocess
    import sys

    good = b"an earlier export"
    (tmp_path / "rein.pt2").write_bytes(good)
    code = _KILLED_EXPORT.format(argv=_export_argv(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (tmp_path / "rein.pt2").read_bytes() == good

    # MODEL.WEIGHTS w.pt2 with --output w: the export would replace the weights
    weights = tmp_path / "w.pt2"
    weights.write_bytes(b"the user's weights")
    argv = _export_argv(tmp_path) + ["MODEL.WEIGHTS", str(weights)]
    argv[argv.index("--output") + 1] = str(tmp_path / "w")
    assert export_model.main(argv) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"which is the input {weights}" in errors[0]
    assert weights.read_bytes() == b"the user's weights"


_SLOW_JOB = '''
import os, time
def job(args):
    folder, i = args
    time.sleep(0.4)
    with open(os.path.join(folder, f"{i}.{os.getpid()}"), "w") as f:  # an output, and who wrote it
        f.write("done")
    return i
'''

_PREPARE = """
import sys
sys.path.insert(0, {here!r})
from slow_job import job
from rein_d2.data.datasets.common import parallel_imap
for _ in parallel_imap([({out!r}, i) for i in range(200)], job, 2, "jobs"):
    pass
"""


def test_killing_a_prepare_run_stops_its_workers(tmp_path):
    """kill -9 of the parent: its spawned workers exit too instead of running their queued jobs."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slow_job.py").write_text(_SLOW_JOB)
    out = tmp_path / "out"
    out.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", _PREPARE.format(here=str(tmp_path), out=str(out))],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(os.listdir(out)) < 4 and time.time() < deadline and parent.poll() is None:
        time.sleep(0.1)
    assert len(os.listdir(out)) >= 4, "the workers never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    workers = {int(name.split(".")[1]) for name in os.listdir(out)}

    def running(pid):  # (an exited worker may stay a zombie: its new parent need not reap it)
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 30  # the watch polls every 0.5 s; a loaded machine may be slower
    alive = [pid for pid in workers if running(pid)]
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if running(pid)]
    for pid in alive:  # (clean up before failing)
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their parent"
    settled = len(os.listdir(out))
    time.sleep(1.0)
    assert len(os.listdir(out)) == settled < 200


def test_cityscapes_label_ids_out_of_range_and_16_bit_labels_are_named(tmp_path, capsys):
    """Label id 250 used to become ignore (255) silently; a 16-bit PNG was called damaged."""
    from rein_d2.data.datasets.labels import run_prepare
    from rein_d2.data.prepare import cityscapes as prep

    labels = tmp_path / "cityscapes" / "gtFine"
    for split in ("train", "val"):
        (labels / split / "aachen").mkdir(parents=True)
        ids = np.full((8, 16), 7, np.uint8)
        Image.fromarray(ids).save(labels / split / "aachen" / "aachen_000000_000019_gtFine_labelIds.png")
    bad = labels / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    ids[0, :3] = (250, 40, 26)
    Image.fromarray(ids).save(bad)
    args = ["--root", str(tmp_path), "--no-count-check", "--workers", "1"]
    assert run_prepare(prep.main, args) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "values 40, 250 are not Cityscapes label ids (0..33)" in errors[0] and "damaged" not in errors[0]
    Image.fromarray(np.full((8, 16), 7, np.uint16) * 300).save(bad)  # e.g. an *_instanceIds.png
    assert run_prepare(prep.main, args) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "a 16-bit PNG, but Cityscapes label ids" in errors[0] and "damaged" not in errors[0]
    assert not (labels / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png").exists()


def test_the_corruption_cache_follows_the_image_not_only_its_path(tmp_path):
    pytest.importorskip("imagecorruptions")
    from rein_d2.data.corruptions import cached_corruption, corrupt_image

    rng = np.random.default_rng(0)
    old, new = (rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(2))
    first = cached_corruption(old, "brightness", 2, 0, "city/a.png", str(tmp_path))
    again = cached_corruption(new, "brightness", 2, 0, "city/a.png", str(tmp_path))  # replaced image
    assert np.array_equal(again, corrupt_image(new, "brightness", 2, 0, "city/a.png"))
    assert not np.array_equal(again, first)
    assert np.array_equal(cached_corruption(old, "brightness", 2, 0, "city/a.png", str(tmp_path)), first)
