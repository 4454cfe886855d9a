"""Bad input stops a run in one line with exit status 2, never a traceback, and no run takes
another's OUTPUT_DIR or follows a last_checkpoint out of it (issue 24, items 10-13)."""
import errno
import os
import socket
import subprocess
import uuid

import numpy as np
import pytest
from detectron2.engine import default_argument_parser
from PIL import Image

from conftest import config_path, error_lines, log_lines
from rein_d2 import load_config
from rein_d2.engine import LightCheckpointer, OutputDirLocked, ReinTrainer, lock_output_dir
from rein_d2.utils.cli import UserError, exit_on_user_error, one_line
from rein_d2.tools import evaluate_dg, train_net
from test_dg_evaluation import target_b
from test_meta_arch import MINI, mini_model
from test_training import make_cfg


def test_a_typo_or_a_wrong_type_inside_a_config_file_is_one_line_naming_file_and_key(tmp_path):
    base = config_path("rein_dinov2.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text(f'_BASE_: "{base}"\nSOLVER:\n  IMS_PER_BACH: 4\n')
    with pytest.raises(UserError) as e:
        load_config(str(typo))
    assert str(typo) in str(e.value) and "SOLVER.IMS_PER_BACH" in str(e.value) and "\n" not in str(e.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f'_BASE_: "{base}"\nSOLVER:\n  IMS_PER_BATCH: four\n')
    with pytest.raises(UserError, match=r"wrong.yaml: Type mismatch .* SOLVER.IMS_PER_BATCH"):
        load_config(str(wrong))
    with pytest.raises(UserError, match=r"MODEL.MASK2FORMER.TEST.CROP_SIZE is \(-512, 512\); it must be positive"):
        load_config(base, ["MODEL.MASK2FORMER.TEST.CROP_SIZE", "(-512, 512)"])


@pytest.mark.parametrize("key,value,said", [
    ("SOLVER.IMS_PER_BATCH", 0, "SOLVER.IMS_PER_BATCH is 0; it must be positive"),
    ("SOLVER.MAX_ITER", -5, "SOLVER.MAX_ITER is -5; it must be positive"),
    ("INPUT.CROP.SIZE", [-64, 64], "INPUT.CROP.SIZE is [-64, 64]; it must be positive"),
    ("SOLVER.LOSS_SPIKE_WINDOW", 0, "SOLVER.LOSS_SPIKE_WINDOW is 0; the loss-spike guard compares"),
])
def test_training_values_that_would_fail_late_or_train_nothing_are_refused_first(tmp_path, key, value, said):
    with pytest.raises(UserError, match=said.replace("[", r"\[").replace("]", r"\]")):
        ReinTrainer(make_cfg("not_needed", tmp_path, key, value))
    assert not os.listdir(tmp_path)


def test_an_unregistered_dataset_names_rein_d2s_and_how_to_register(tmp_path, capsys):
    with pytest.raises(UserError) as e:
        ReinTrainer(make_cfg("cityscapes_rein_vall", tmp_path))
    message = str(e.value)
    assert "DATASETS.TRAIN: dataset 'cityscapes_rein_vall' is not registered" in message
    assert "cityscapes_rein_val" in message and "register_semantic_dataset" in message
    assert "coco_2017_train" not in message
    rc = evaluate_dg.main(["--config-file", config_path("rein_dinov2.yaml"), "--datasets",
                                        "gtav_trian", "--output-dir", str(tmp_path / "dg"), *map(str, MINI)])
    errors = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(errors) == 1 and "--datasets: dataset 'gtav_trian' is not registered" in errors[0]


def test_an_unknown_vit_size_names_the_choices_in_one_line(tmp_path, capsys):
    rc = evaluate_dg.main(["--config-file", config_path("rein_dinov2.yaml"), "--datasets",
                                        "gtav_train", "--output-dir", str(tmp_path / "dg"), *map(str, MINI),
                                        "MODEL.VIT.SIZE", "smal"])
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in captured.err
    assert "'smal'" in errors[0] and errors[0].endswith("set MODEL.VIT.SIZE to one of: base, giant, large, small")


def test_a_label_value_out_of_range_stops_train_net_in_one_line(tmp_path, capfd):
    """Exit 2 and the label's file and values, without the traceback detectron2's training
    loop logs for every exception."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    image, label = tmp_path / "0.png", tmp_path / "0_label.png"
    Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.full((64, 96), 7, np.uint8)).save(label)  # 3 classes: 7 is none of them
    name = f"bad_label_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, lambda: [
        {"file_name": str(image), "sem_seg_file_name": str(label), "height": 64, "width": 96}])
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255)
    opts = [*map(str, MINI), "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.CROP.SIZE", "[64, 64]", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2",
        "OUTPUT_DIR", str(tmp_path / "out")]
    args = default_argument_parser().parse_args(["--config-file", config_path("rein_dinov2.yaml"), *opts])
    with pytest.raises(SystemExit) as e:
        train_net.main(args)
    captured = capfd.readouterr()
    assert e.value.code == 2
    assert "Traceback" not in captured.out + captured.err
    errors = error_lines(captured.err)
    assert len(errors) == 1 and str(label) in errors[0] and "holds values 7 outside the classes 0..2" in errors[0]


def test_a_worker_wrapped_error_is_printed_as_its_own_last_line():
    from torch._utils import ExceptionWrapper

    try:
        raise UserError("label x.png holds values 7 outside the classes 0..2")
    except UserError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(UserError) as e:
        wrapped.reraise()
    assert "Original Traceback" in str(e.value)
    assert one_line(e.value) == "label x.png holds values 7 outside the classes 0..2"


def test_a_second_training_run_in_one_output_dir_is_refused_and_a_dead_runs_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])  # a live run on this host, as its lock file says
    (out / ".rein_d2_train.lock").write_text(f"pid={holder.pid}\nhost={socket.gethostname()}\n"
                                             "started=2026-01-01 00:00:00\n")
    try:
        with pytest.raises(OutputDirLocked) as e:
            lock_output_dir(str(out))
        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
        # the whole tool: refused before log.txt is opened
        args = default_argument_parser().parse_args(
            ["--config-file", config_path("rein_dinov2.yaml"), "OUTPUT_DIR", str(out), *map(str, MINI)])
        with pytest.raises(SystemExit) as exit_:
            train_net.main(args)
        assert exit_.value.code == 2 and not (out / "log.txt").exists()
        assert "is in use by another training run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (-9): its lock is stale, and taken over
    (out / ".model_0000002.pth.ab12cd.tmp").write_bytes(b"a torn save")
    path = lock_output_dir(str(out))
    assert f"pid={os.getpid()}" in open(path).read()
    assert not (out / ".model_0000002.pth.ab12cd.tmp").exists()
    # a lock from another host cannot be checked from here: refused
    other = tmp_path / "other"
    other.mkdir()
    (other / ".rein_d2_train.lock").write_text("pid=1\nhost=elsewhere\nstarted=2026-01-01 00:00:00\n")
    with pytest.raises(OutputDirLocked, match="pid 1 on host elsewhere"):
        lock_output_dir(str(other))


def test_last_checkpoint_naming_a_file_outside_output_dir_is_refused_unread(tmp_path):
    secret = tmp_path / "secret.pth"
    secret.write_bytes(b"PRIVATE BYTES")
    out = tmp_path / "out"
    out.mkdir()
    ckpt = LightCheckpointer(mini_model(), str(out))
    for name in (str(secret), "../secret.pth", "", "."):
        (out / "last_checkpoint").write_text(name)
        with pytest.raises(UserError) as e:
            ckpt.get_checkpoint_file()
        assert "does not name a checkpoint file in OUTPUT_DIR" in str(e.value)
        assert "PRIVATE" not in str(e.value)
    os.symlink(secret, out / "link.pth")  # a link out of the folder
    (out / "last_checkpoint").write_text("link.pth")
    with pytest.raises(UserError):
        ckpt.get_checkpoint_file()
    ckpt.save("model_0000001")
    assert ckpt.get_checkpoint_file() == str(out / "model_0000001.pth")


def test_torch_save_failing_on_a_full_disk_is_the_promised_line(tmp_path, capsys):
    """A real failed write (the file-size limit gives EFBIG, as a full disk gives ENOSPC):
    torch 2.x raises RuntimeError: [enforce fail at inline_container.cc ...] there."""
    import resource
    import signal

    import torch
    from rein_d2.engine import save_atomic

    target = tmp_path / "model_0000001.pth"
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        rc = exit_on_user_error(lambda: save_atomic({"model": torch.zeros(100000)}, str(target)))()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert rc == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert f"could not write the checkpoint {target}: File too large; it needs about 0.4 MiB" in errors[0]
    assert "are free in" in errors[0] and "--resume" in errors[0]
    assert os.listdir(tmp_path) == []


def test_evaluate_dg_on_a_full_disk_is_one_line_and_keeps_the_scores(tmp_path, capsys, monkeypatch):
    """The summary files are written whole or not at all; on a full disk the evaluation's scores
    are still shown (the log), so hours of inference are not lost to one failed write."""
    import rein_d2.utils.files as files

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_write_all", full)
    name = target_b(tmp_path)
    out = tmp_path / "dg"
    with log_lines("rein_d2.evaluation") as shown:
        rc = evaluate_dg.main(["--config-file", config_path("rein_dinov2.yaml"), "--datasets", name,
                               "--output-dir", str(out), *map(str, MINI), "DATALOADER.NUM_WORKERS", "0"])
    errors = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(errors) == 1
    assert f"could not write {out / 'dg_summary.json'}: No space left on device; it needs about" in errors[0]
    assert "are free in" in errors[0] and "nothing was written under that name" in errors[0]
    kept = [line for line in shown if line.startswith(f"Domain generalization, not saved to {out}")]
    assert len(kept) == 1 and f"| {name}" in kept[0] and "mIoU" in kept[0]
    assert not [f for f in os.listdir(out) if f.startswith(("dg_summary", ".dg_summary"))]  # no torn file


def test_summary_files_are_written_whole(tmp_path):
    """dg_summary / robustness / aggregate files go through the verified atomic write: what is
    read back is what the summary holds (NaN included), and no temporary file is left."""
    import json

    from rein_d2.evaluation.domain_generalization import DGSummary
    from rein_d2.evaluation.robustness import RobustnessSummary

    dg = DGSummary(["road", "car"], source=[])
    dg.add("city_val", {"sem_seg": {"mIoU": 50.0, "mACC": 60.0, "pACC": 70.0,
                                    "IoU-road": 80.0, "IoU-car": float("nan")}})
    paths = dg.write(str(tmp_path))
    data = json.loads(open(paths["json"]).read())
    assert data["mIoU"] == {"city_val": 50.0} and data["IoU"]["city_val"][0] == 80.0
    assert open(paths["csv"]).read().splitlines()[0] == "dataset,domain,mIoU,mAcc,aAcc,road,car"
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    robust = RobustnessSummary("city_val", 50.0)
    robust.miou = {"fog": {1: 40.0, 2: 30.0}}
    paths = robust.write(str(tmp_path))
    assert json.loads(open(paths["json"]).read())["mPC"] == pytest.approx(35.0)
    assert "mPC,,35.0000" in open(paths["csv"]).read()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_exit_on_user_error_turns_only_space_errors_into_a_line(capsys):
    def full():
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/out/x.json")

    assert exit_on_user_error(full)() == 2
    assert "could not write /data/out/x.json: Disk quota exceeded" in capsys.readouterr().err

    def other():
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):
        exit_on_user_error(other)()
