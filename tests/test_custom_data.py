"""A user's own dataset from a description file, no code: docs/CUSTOM_DATA.md's files and
commands run as written on a 3-class colour-coded folder (train, DG evaluation, predict,
demo); colour and id labels converted pixel by pixel; bad descriptions and configs refused
with one line saying what to fix."""
import importlib
import json
import os
import re
import shlex

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from PIL import Image

from rein_d2 import load_config
from rein_d2.data.datasets import register_semantic_dataset
from rein_d2.data.datasets.custom import register_description
from rein_d2.utils.cli import UserError
from conftest import REPO, config_path
from test_weights_safety import _reset_loggers  # noqa: F401  (autouse fixture)

DOC = os.path.join(REPO, "docs", "CUSTOM_DATA.md")
COLORS = [(0, 0, 0), (220, 20, 60), (0, 0, 142)]
WHITE = (255, 255, 255)


def doc_blocks():
    """{path: text} of the files the page shows, and its list of commands."""
    text = open(DOC).read()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))
    commands = re.search(r"<!-- commands -->\n```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    return files, commands


def shapes_label(rng, h=64, w=96):
    """Class ids: a disc (1) and a bar (2) on background (0), a 2-pixel ignore border (255)."""
    ids = np.zeros((h, w), np.uint8)
    cv2.circle(ids, (int(rng.integers(20, 76)), int(rng.integers(20, 44))), int(rng.integers(8, 14)), 1, -1)
    x = int(rng.integers(0, 70))
    ids[int(rng.integers(0, 30)):, x:x + 12] = 2
    ids[:2] = 255
    return ids


def paint(ids):
    lut = np.zeros((256, 3), np.uint8)
    lut[:3] = COLORS
    lut[255] = WHITE
    return lut[ids]


def write_shapes(root, n_train=6, n_val=2):
    """images/<split>/<i>.jpg (classes separable by colour) and colour-coded
    labels/<split>/<i>_mask.png; returns {split: [class-id arrays]}."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("val", n_val)):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        out[split] = []
        for i in range(n):
            ids = shapes_label(rng)
            image = np.array([(90, 160, 90), (230, 60, 60), (40, 40, 200)] + [(90, 160, 90)] * 253,
                             np.uint8)[ids]
            image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(os.path.join(root, "images", split, f"f{i}.jpg"), quality=95)
            Image.fromarray(paint(ids)).save(os.path.join(root, "labels", split, f"f{i}_mask.png"))
            out[split].append(ids)
    return out


def miou(preds, labels, k=3):
    """SemSegEvaluator's mIoU: classes absent from the labels are left out."""
    conf = np.zeros((k, k), np.int64)
    for p, l in zip(preds, labels):
        m = l != 255
        conf += np.bincount(l[m].astype(int) * k + p[m], minlength=k * k).reshape(k, k)
    tp, gt, pred = np.diag(conf), conf.sum(1), conf.sum(0)
    valid = gt > 0
    return 100 * float(np.mean(tp[valid] / (gt + pred - tp)[valid]))


def test_the_documented_commands_train_evaluate_predict_and_draw(tmp_path, monkeypatch, capsys):
    files, commands = doc_blocks()
    assert set(files) == {"data/shapes/dataset.yaml", "data/shapes/shapes_tiny.yaml", "my_dinov2_l.yaml"}
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
    for path, text in files.items():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        open(path, "w").write(text)
    labels = write_shapes("data/shapes")
    assert [c.split()[1] for c in commands] == [
        "tools/train_net.py", "tools/evaluate_dg.py", "tools/predict.py", "tools/demo.py"]
    for command in commands:
        argv = shlex.split(command)
        name = os.path.splitext(os.path.basename(argv[1]))[0]
        program = importlib.import_module(f"rein_d2.tools.{name}")  # what the script runs
        if name == "train_net":
            program.main(default_argument_parser().parse_args(argv[2:]))
        else:
            assert program.main(argv[2:]) == 0, command

    assert os.path.isfile("output/shapes/model_final.pth")
    table = capsys.readouterr().out
    for cls in ("background", "disc", "bar"):  # the per-class table names the description's classes
        assert re.search(rf"^\| {cls} +\| +[\d.]+ \|$", table, re.M), table
    summary = json.load(open("output/shapes/dg/dg_summary.json"))
    assert summary["classes"] == ["background", "disc", "bar"]
    assert summary["source"] == ["shapes_val"]  # the training domain's split, reported apart

    # predict: one class-id PNG per validation image, scored as evaluate_dg scored them; its
    # colour PNG in the description's colours
    preds = [np.asarray(Image.open(f"output/shapes/pred/f{i}.png")) for i in range(2)]
    assert all(p.shape == (64, 96) and set(np.unique(p)) <= {0, 1, 2} for p in preds)
    assert miou(preds, labels["val"]) == pytest.approx(summary["mIoU"]["shapes_val"], abs=1e-6)
    for i, p in enumerate(preds):
        color = np.asarray(Image.open(f"output/shapes/pred_color/f{i}.png").convert("RGB"))
        np.testing.assert_array_equal(color, np.array(COLORS, np.uint8)[p])

    # demo: an overlay per image, of its size, drawn over it
    for i in range(2):
        overlay = cv2.imread(f"output/shapes/demo/f{i}.png")
        image = cv2.imread(f"data/shapes/images/val/f{i}.jpg")
        assert overlay.shape == image.shape and np.abs(overlay.astype(int) - image).mean() > 5


def test_the_documented_dinov2_l_config_loads_and_a_wrong_number_of_classes_is_refused(tmp_path, monkeypatch):
    files, _ = doc_blocks()
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
    os.makedirs("data/shapes")
    for path in ("data/shapes/dataset.yaml", "my_dinov2_l.yaml"):
        open(path, "w").write(files[path])
    cfg = load_config("my_dinov2_l.yaml")
    assert (cfg.MODEL.VIT.SIZE, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == ("large", 3)
    assert cfg.DATASETS.TRAIN == ("shapes_train",) and cfg.DATASETS.TEST == ("shapes_val",)
    opts = ["DATASETS.DESCRIPTIONS", "['data/shapes/dataset.yaml']", "DATASETS.TRAIN", "('shapes_train',)"]
    with pytest.raises(UserError, match=r"NUM_CLASSES is 19 but .*dataset.yaml names 3 classes "
                                        r"\(background, disc, bar\).*NUM_CLASSES 3"):
        load_config(config_path("rein_dinov2.yaml"), opts)
    cfg = load_config(config_path("rein_dinov2.yaml"), opts + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    assert MetadataCatalog.get("shapes_train").stuff_classes == ["background", "disc", "bar"]
    assert cfg.DATASETS.TRAIN == ("shapes_train",)


def test_colour_labels_become_class_ids_pixel_by_pixel_and_unknown_colours_are_named(tmp_path):
    files, _ = doc_blocks()
    root = tmp_path / "shapes"
    labels = write_shapes(str(root), n_train=2, n_val=1)
    (root / "dataset.yaml").write_text(files["data/shapes/dataset.yaml"])
    assert register_description(str(root / "dataset.yaml")) == ["shapes_train", "shapes_val"]
    dicts = DatasetCatalog.get("shapes_train")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["f0.jpg", "f1.jpg"]
    for d, ids in zip(dicts, labels["train"]):
        np.testing.assert_array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), ids)
    meta = MetadataCatalog.get("shapes_val")
    assert meta.stuff_colors == [list(c) for c in COLORS] and meta.ignore_label == 255

    bad = paint(labels["train"][0])
    bad[10, 7] = (1, 2, 3)
    Image.fromarray(bad).save(root / "labels" / "train" / "f0_mask.png")
    newer = os.path.getmtime(dicts[0]["sem_seg_file_name"]) + 10  # than f0's conversion
    os.utime(root / "labels" / "train" / "f0_mask.png", (newer, newer))
    with pytest.raises(ValueError, match=r"f0_mask.png: colour\(s\) in neither colors nor "
                                         r"ignore_colors .*\(1, 2, 3\) \(first at x=7, y=10; 1 pixels\)"):
        DatasetCatalog.get("shapes_train")


def test_python_registration_with_classes_prefixes_and_another_ignore_value(tmp_path):
    """register_semantic_dataset(..., classes=, colors=): id labels whose ignore is 250, paired
    by file-name prefixes (rgb_0001.png with ss_0001.png)."""
    rng = np.random.default_rng(1)
    (tmp_path / "rgb").mkdir()
    (tmp_path / "ss").mkdir()
    raw = rng.integers(0, 2, (5, 7)).astype(np.uint8)
    raw[0, :3] = 250
    Image.fromarray(raw).save(tmp_path / "ss" / "ss_0001.png")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "rgb" / "rgb_0001.png")
    register_semantic_dataset("pets_demo_train", str(tmp_path / "rgb"), str(tmp_path / "ss"), ".png", ".png",
                              classes=["cat", "dog"], colors=[[1, 1, 1], [2, 2, 2]], ignore_label=250,
                              image_prefix="rgb_", label_prefix="ss_")
    try:
        (d,) = DatasetCatalog.get("pets_demo_train")
        assert d["file_name"].endswith("rgb_0001.png")
        expected = raw.copy()
        expected[raw == 250] = 255
        np.testing.assert_array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), expected)
        assert MetadataCatalog.get("pets_demo_train").stuff_classes == ["cat", "dog"]
    finally:  # (registered for this tmp_path only: a second run registers it again)
        DatasetCatalog.remove("pets_demo_train")
        MetadataCatalog.remove("pets_demo_train")


@pytest.mark.parametrize("text, message", [
    ('{"name": "x", "classes": ["a"], "splits": {"t": {"images": "i", "labels": "l"}}, "colour": 1}',
     r"unknown key\(s\) colour; the keys are: name"),
    ('{"name": "x", "classes": ["a", "a"], "splits": {"t": {"images": "i", "labels": "l"}}}',
     r"classes must be a non-empty list of distinct names"),
    ('{"name": "x", "classes": ["a", "b"], "label_format": "color", "colors": [[0, 0, 0]], '
     '"splits": {"t": {"images": "i", "labels": "l"}}}', r"1 colors for 2 classes"),
    ('{"name": "x", "classes": ["a"], "label_pattern": "mask.png", "splits": {"t": {"images": "i", "labels": "l"}}}',
     r"label_pattern is 'mask.png'; expected a file name holding \{name\} once"),
    ('{"name": "x", "classes": ["a"], "splits": {"t": {"images": "i"}}}', r"split 't' is"),
    ('{"name": "x", "classes": ["a"], "splits"', r"not valid JSON"),
])
def test_bad_descriptions_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as e:
        register_description(str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_folders_and_unpaired_files_point_at_the_description(tmp_path):
    files, _ = doc_blocks()
    root = tmp_path / "shapes"
    write_shapes(str(root), n_train=2, n_val=1)
    (root / "dataset.yaml").write_text(files["data/shapes/dataset.yaml"].replace("images/val", "images/valid"))
    register_description(str(root / "dataset.yaml"))
    with pytest.raises(FileNotFoundError, match=r"(?s)'shapes_val': directory not found: .*images/valid; expected:"
                                                r"\n  images/valid/\{name\}.jpg\n.*check the folders and "
                                                r"patterns in .*dataset.yaml"):
        DatasetCatalog.get("shapes_val")
    os.remove(root / "images" / "train" / "f1.jpg")
    with pytest.raises(FileNotFoundError, match=r"1 label file\(s\) have no counterpart '\*.jpg' under "
                                                r".*images/train \(check the folders and patterns in "):
        DatasetCatalog.get("shapes_train")


def test_images_and_colour_labels_in_one_folder(tmp_path):
    """The converted labels (.rein_labels/ below that folder) are not taken for data."""
    ids = shapes_label(np.random.default_rng(2))
    Image.fromarray(paint(ids)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "d.yaml").write_text(
        "name: onefolder\nclasses: [background, disc, bar]\n"
        "colors: [[0, 0, 0], [220, 20, 60], [0, 0, 142]]\nlabel_format: color\n"
        "ignore_colors: [[255, 255, 255]]\nlabel_pattern: '{name}_mask.png'\n"
        "splits: {all: {images: ., labels: .}}\n")
    register_description(str(tmp_path / "d.yaml"))
    for _ in range(2):  # the second load finds the converted files beside the data
        (d,) = DatasetCatalog.get("onefolder_all")
        assert ".rein_labels" in d["sem_seg_file_name"]
        np.testing.assert_array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), ids)
