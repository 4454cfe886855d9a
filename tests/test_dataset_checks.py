"""What the preparation scripts and dataset loaders do with files that are stale, foreign or
damaged, on miniature trees in the official on-disk layouts."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

import rein_d2.data  # noqa: F401  (registers the datasets)
from rein_d2.data.datasets.common import CHECKED_IMAGES_RECORD
from rein_d2.data.datasets.labels import run_prepare
from conftest import error_lines
from test_datasets import _script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def _save(path, array, mode=None, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(array, mode=mode)
    if palette:
        img.putpalette(list(range(256)) * 3)
    img.save(path)


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _noise(h=32, w=48, seed=0):
    # Noise does not compress: half the file lacks half the pixels.
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _write_gtav(root, n=2, label_id=26):
    """gta/images/NNNNN.png and gta/labels/NNNNN.png (palette PNGs of Cityscapes ids)."""
    for i in range(n):
        _save(str(root / "gta" / "images" / f"{i:05d}.png"), _noise(seed=i))
        _save(str(root / "gta" / "labels" / f"{i:05d}.png"), np.full((32, 48), label_id, np.uint8),
              mode="P", palette=True)


def _gtav_args(root, *extra, workers="1"):
    return ["--root", str(root), "--no-count-check", "--workers", workers, *extra]


def _trainids(root, name="00000.png"):
    return np.array(Image.open(root / "gta" / "labels_trainid" / name))


# ---------------------------------------------------------------- 1a: stale outputs


def test_a_raw_label_newer_than_its_output_is_converted_again(root, capsys):
    _write_gtav(root, label_id=26)  # car -> 13
    prep = _script("prepare_gtav")
    assert prep.main(_gtav_args(root)) == 0
    assert (_trainids(root) == 13).all()
    # The label is downloaded again with other content: newer than its train-id file.
    raw = root / "gta" / "labels" / "00000.png"
    _save(str(raw), np.full((32, 48), 7, np.uint8), mode="P", palette=True)  # road -> 0
    newer = os.path.getmtime(root / "gta" / "labels_trainid" / "00000.png") + 10
    os.utime(raw, (newer, newer))
    capsys.readouterr()
    assert prep.main(_gtav_args(root)) == 0
    assert "converted 1, skipped 1" in capsys.readouterr().out
    assert (_trainids(root) == 0).all()
    assert (_trainids(root, "00001.png") == 13).all()  # untouched frame stays as it was


# ---------------------------------------------------------------- 1b: reference outputs


def test_reference_trainid_files_beside_raw_labels_are_skipped_with_one_note(root, capsys):
    _write_gtav(root)
    for i in range(2):  # what mmseg's tools/convert_datasets/gta.py leaves in gta/labels
        _save(str(root / "gta" / "labels" / f"{i:05d}_labelTrainIds.png"), np.full((32, 48), 13, np.uint8))
    assert _script("prepare_gtav").main(_gtav_args(root)) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "_labelTrainIds.png" in line]
    assert len(notes) == 1 and "2 " in notes[0] and str(root / "gta" / "labels") in notes[0]
    assert "converted 2," in out
    assert sorted(os.listdir(root / "gta" / "labels_trainid")) == ["00000.png", "00001.png"]
    assert len(DatasetCatalog.get("gtav_train")) == 2  # the split loads


# ---------------------------------------------------------------- 1c: --check-images


def test_check_images_lists_every_unreadable_image_and_fails(root, capsys):
    _write_gtav(root, n=3)
    bad = [root / "gta" / "images" / f"{i:05d}.png" for i in (0, 2)]
    for path in bad:
        _truncate(path)
    prep = _script("prepare_gtav")
    # Without the flag, nothing decodes the images (a damaged one shows only in training).
    assert prep.main(_gtav_args(root)) == 0
    capsys.readouterr()
    assert run_prepare(prep.main, _gtav_args(root, "--check-images", workers="2")) == 2
    err = capsys.readouterr().err.splitlines()
    for path in bad:
        assert sum(str(path) in line for line in err) == 1
    assert not any("00001.png" in line for line in err)
    assert err[-1].startswith("error: 2 unreadable image(s)") and "Traceback" not in "\n".join(err)


def test_check_images_is_resumable_and_rechecks_changed_files(root, capsys):
    _write_gtav(root, n=2)
    prep = _script("prepare_gtav")
    assert prep.main(_gtav_args(root, "--check-images")) == 0
    assert "2 decoded, 0 unchanged" in capsys.readouterr().out
    record = json.loads((root / "gta" / "labels_trainid" / CHECKED_IMAGES_RECORD).read_text())
    assert sorted(record) == ["00000.png", "00001.png"]
    assert prep.main(_gtav_args(root, "--check-images")) == 0
    assert "0 decoded, 2 unchanged" in capsys.readouterr().out
    _truncate(root / "gta" / "images" / "00001.png")  # changed since: decoded again
    with pytest.raises(RuntimeError, match="1 unreadable image"):
        prep.main(_gtav_args(root, "--check-images"))
    captured = capsys.readouterr()
    assert "1 decoded, 1 unchanged" in captured.out and "00001.png: unreadable image" in captured.err
    _save(str(root / "gta" / "images" / "00001.png"), _noise(seed=1))  # downloaded again
    assert prep.main(_gtav_args(root, "--check-images")) == 0


def test_check_images_covers_the_checking_scripts_too(root, capsys):
    """BDD100K (JPEG images, labels only checked): a truncated JPEG decodes partly in OpenCV but
    fails in PIL, detectron2's reader."""
    for split in ("train", "val"):
        path = root / "bdd100k" / "images" / "10k" / split / "a.jpg"
        _save(str(path), _noise(64, 64))
        _save(str(root / "bdd100k" / "labels" / "sem_seg" / "masks" / split / "a.png"),
              np.zeros((64, 64), np.uint8))
    _truncate(root / "bdd100k" / "images" / "10k" / "val" / "a.jpg")
    args = ["--root", str(root), "--no-count-check", "--workers", "1", "--check-images"]
    assert run_prepare(_script("prepare_bdd100k").main, args) == 2
    err = capsys.readouterr().err
    assert "10k/val/a.jpg: unreadable image" in err and "10k/train/a.jpg" not in err


# ---------------------------------------------------------------- 1d: one-line errors


def _write_mapillary(root):
    os.makedirs(root / "mapillary", exist_ok=True)
    with open(root / "mapillary" / "config_v1.2.json", "w") as f:
        json.dump({"labels": [{"readable": "Road"}, {"readable": "Car"}]}, f)
    for folder in ("training", "validation"):
        _save(str(root / "mapillary" / folder / "images" / "abc.jpg"), _noise())
        _save(str(root / "mapillary" / folder / "v1.2" / "labels" / "abc.png"),
              np.random.RandomState(0).randint(0, 2, (32, 48)).astype(np.uint8), mode="P", palette=True)
    return root / "mapillary" / "validation" / "v1.2" / "labels" / "abc.png"


def _write_gtav_label(root):
    # Noise labels, so that half the file lacks pixels.
    _write_gtav(root)
    path = root / "gta" / "labels" / "00001.png"
    _save(str(path), np.random.RandomState(0).randint(0, 34, (32, 48)).astype(np.uint8), mode="P", palette=True)
    return path


@pytest.mark.parametrize("script,write,workers", [
    ("prepare_gtav", _write_gtav_label, "2"),
    ("prepare_mapillary", _write_mapillary, "1"),
])
def test_truncated_raw_label_gives_one_line_naming_the_file(root, capsys, script, write, workers):
    label = write(root)
    _truncate(label)
    args = ["--root", str(root), "--no-count-check", "--workers", workers]
    assert run_prepare(_script(script).main, args) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and str(label) in lines[0] and "download it again" in lines[0]
    assert "Traceback" not in err


def test_other_expected_errors_are_one_line_too(root, capsys):
    _write_mapillary(root)
    (root / "mapillary" / "config_v1.2.json").write_text('{"labels": [')  # cut short
    assert run_prepare(_script("prepare_mapillary").main, ["--root", str(root), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config_v1.2.json" in err[0] and "download" in err[0]


# ---------------------------------------------------------------- 2d: empty split


def test_empty_split_names_the_dataset_where_it_looked_and_what_to_do(root):
    os.makedirs(root / "gta" / "images")
    os.makedirs(root / "gta" / "labels_trainid")
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("gtav_train")
    msg = str(e.value)
    assert "gtav_train" in msg and str(root / "gta" / "images") in msg and "download" in msg
    assert "\n" not in msg
