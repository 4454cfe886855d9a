"""ReinPanoptic's datasets: each preparation script on a miniature tree in its dataset's official
layout, then the registered panoptic and instance records checked pixel by pixel against one
hand-made scene (written in each dataset's own label encoding)."""
import importlib
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

import rein_panoptic  # noqa: F401  (registers the names)
from rein_d2.data.datasets.common import datasets_root
from rein_panoptic.data import (CITYSCAPES_PANOPTIC_META, CLASSES, THING_TRAIN_IDS, instance_metadata,
                                panoptic_metadata, register_all)
from rein_panoptic.data.builtin import CITYSCAPES_PANOPTIC_NAMES

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 32, 64
T = {n: i for i, n in enumerate(CLASSES)}

# The scene: (rows, cols) -> the part it shows. Two regions of road (to be merged: PQ scores one
# segment per stuff class), two cars, a crowd of people, a class outside the 19 and unlabeled.
REGIONS = {
    "sky": (slice(0, 8), slice(0, 64)),
    "road_a": (slice(8, 16), slice(0, 32)), "road_b": (slice(8, 16), slice(32, 64)),
    "car_1": (slice(16, 24), slice(0, 16)), "car_2": (slice(16, 24), slice(16, 32)),
    "crowd": (slice(16, 24), slice(32, 48)), "unmapped": (slice(16, 24), slice(48, 64)),
    "building": (slice(24, 32), slice(0, 32)),  # rows 24..31, cols 32..63: unlabeled
}
# Expected output: panoptic segment id (Cityscapes' convention) -> (train id, iscrowd, parts).
EXPECTED = {23: (T["sky"], 0, ["sky"]), 7: (T["road"], 0, ["road_a", "road_b"]),
            26001: (T["car"], 0, ["car_1"]), 26002: (T["car"], 0, ["car_2"]),
            24: (T["person"], 1, ["crowd"]), 11: (T["building"], 0, ["building"])}


def _mask(*parts):
    m = np.zeros((H, W), bool)
    for p in parts:
        m[REGIONS[p]] = True
    return m


def _paint(values, dtype=np.int64, channels=None):
    """An array with values[part] painted in each part (0 elsewhere)."""
    arr = np.zeros((H, W) if channels is None else (H, W, channels), dtype)
    for part, v in values.items():
        arr[REGIONS[part]] = v
    return arr


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, arr)


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


def _panoptic_png(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(path)


def _script(name):
    """The program of prepare/prepare_<name>_panoptic.py: rein_panoptic.data.prepare.<name>."""
    return importlib.import_module(f"rein_panoptic.data.prepare.{name}")


def _prepare(name, root, *extra):
    """The script's exit code (rein_d2's run_prepare: 2 with an 'error: ...' line)."""
    script = _script(name)
    return script.run_prepare(script.main, ["--root", root, "--workers", "1", "--no-count-check", *extra])


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A datasets root in tmp_path with every name registered for it; afterwards the names are
    registered again for the root they had."""
    before = datasets_root()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all(str(tmp_path), replace=True)
    yield str(tmp_path)
    register_all(before, replace=True)


def check_panoptic(name, n_images, expected=EXPECTED):
    """Every record of ``name`` shows the scene: segment ids, classes, isthing, iscrowd, the
    panoptic PNG and the train-id PNG pixel by pixel."""
    meta = MetadataCatalog.get(name)
    records = DatasetCatalog.get(name)
    assert len(records) == n_images
    for r in records:
        assert os.path.isfile(r["file_name"])
        pan = rgb2id(np.asarray(Image.open(r["pan_seg_file_name"]).convert("RGB")))
        sem = np.asarray(Image.open(r["sem_seg_file_name"]))
        want_sem = np.full((H, W), 255, np.uint8)
        want_pan = np.zeros((H, W), np.int64)
        for sid, (t, _, parts) in expected.items():
            want_pan[_mask(*parts)] = sid
            want_sem[_mask(*parts)] = t
        np.testing.assert_array_equal(pan, want_pan)
        np.testing.assert_array_equal(sem, want_sem)
        segs = {s["id"]: s for s in r["segments_info"]}
        assert sorted(segs) == sorted(expected)
        for sid, (t, crowd, parts) in expected.items():
            s = segs[sid]
            assert s["category_id"] == t and s["iscrowd"] == crowd, (sid, s)
            assert s.get("isthing", t in THING_TRAIN_IDS) == (t in THING_TRAIN_IDS)
            assert s["area"] == _mask(*parts).sum()
            ys, xs = np.nonzero(_mask(*parts))
            assert list(s["bbox"]) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # The contiguous ids index the class names: one model, one label space.
        assert sorted(meta.stuff_classes[t] for t, _, _ in expected.values()) == \
            ["building", "car", "car", "person", "road", "sky"]
    return records


def check_instances(name, n_images, expected=EXPECTED):
    """The instance records: one annotation per thing segment, contiguous ids 0..7, the RLE
    decoding to the segment's pixels, the crowd flag, XYWH boxes."""
    records = DatasetCatalog.get(name)
    assert len(records) == n_images
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.thing_classes == [CLASSES[t] for t in THING_TRAIN_IDS]
    things = {sid: v for sid, v in expected.items() if v[0] in THING_TRAIN_IDS}
    for r in records:
        assert os.path.isfile(r["file_name"]) and (r["height"], r["width"]) == (H, W)
        got = sorted(((a["category_id"], a["iscrowd"], mask_util.decode(a["segmentation"]).astype(bool).tobytes(),
                       tuple(a["bbox"])) for a in r["annotations"]))
        want = []
        for t, crowd, parts in things.values():
            ys, xs = np.nonzero(_mask(*parts))
            want.append((THING_TRAIN_IDS.index(t), crowd, _mask(*parts).tobytes(),
                         (float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1))))
        assert got == sorted(want)
        assert all(a["bbox_mode"] == 1 for a in r["annotations"])  # BoxMode.XYWH_ABS


# ---------------------------------------------------------------- metadata


def test_one_label_space_and_detectron2_cityscapes_agrees():
    meta = panoptic_metadata()
    assert CLASSES[0] == "road" and CLASSES[18] == "bicycle" and len(CLASSES) == 19
    assert [CLASSES[t] for t in THING_TRAIN_IDS] == ["person", "rider", "car", "truck", "bus", "train",
                                                     "motorcycle", "bicycle"]
    # Cityscapes label ids -> train ids (REIN_SPEC section 6), things and stuff apart.
    spec = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
            26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert {**meta["thing_dataset_id_to_contiguous_id"], **meta["stuff_dataset_id_to_contiguous_id"]} == spec
    assert sorted(meta["thing_dataset_id_to_contiguous_id"].values()) == list(range(11, 19))
    assert instance_metadata()["thing_dataset_id_to_contiguous_id"] == {24: 0, 25: 1, 26: 2, 27: 3, 28: 4,
                                                                       31: 5, 32: 6, 33: 7}
    for name in CITYSCAPES_PANOPTIC_NAMES:  # detectron2's own registration: the same ids and names
        d2 = MetadataCatalog.get(name)
        for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id", "stuff_classes"):
            assert getattr(d2, key) == CITYSCAPES_PANOPTIC_META[key], (name, key)
    for name in ("mapillary_panoptic_val", "bdd100k_panoptic_val", "acdc_panoptic_val", "synthia_panoptic_train"):
        m = MetadataCatalog.get(name)
        assert m.evaluator_type == "coco_panoptic_seg" and m.label_divisor == 1000 and m.ignore_label == 255
        assert m.thing_dataset_id_to_contiguous_id == meta["thing_dataset_id_to_contiguous_id"]


def test_registration_is_lazy_and_a_missing_root_says_what_to_do(tmp_path):
    empty = str(tmp_path / "nothing")
    register_all(empty, replace=True)  # touches no disk: nothing there, no error
    try:
        for name, script in (("mapillary_panoptic_val", "prepare_mapillary_panoptic.py"),
                             ("bdd100k_instance_train", "prepare_bdd100k_panoptic.py"),
                             ("acdc_panoptic_night_val", "prepare_acdc_panoptic.py"),
                             ("synthia_panoptic_train", "prepare_synthia_panoptic.py"),
                             ("cityscapes_instance_val", "prepare_cityscapes_panoptic.py")):
            with pytest.raises(FileNotFoundError) as e:
                DatasetCatalog.get(name)
            msg = str(e.value)
            assert "DETECTRON2_DATASETS" in msg and script in msg and empty in msg and "layout" in msg, msg
        # The raw files there but not converted: the message says to run the script.
        os.makedirs(os.path.join(empty, "bdd100k/labels/pan_seg/bitmasks/val"))
        with pytest.raises(FileNotFoundError, match="not been converted.*prepare_bdd100k_panoptic.py"):
            DatasetCatalog.get("bdd100k_panoptic_val")
    finally:
        register_all(datasets_root(), replace=True)


# ---------------------------------------------------------------- Cityscapes


def _write_cityscapes(root, split, city="aachen", frame="000000_000019"):
    labels = _paint({"sky": 23, "road_a": 7, "road_b": 7, "car_1": 26, "car_2": 26, "crowd": 24,
                     "unmapped": 4, "building": 11})  # 4: 'static', not one of the 19
    instances = labels.copy()
    instances[REGIONS["car_1"]], instances[REGIONS["car_2"]] = 26000, 26001  # instance ids start at 0
    stem = os.path.join(root, "cityscapes", "gtFine", split, city, f"{city}_{frame}_gtFine_")
    _save(stem + "labelIds.png", labels.astype(np.uint8))
    _save(stem + "instanceIds.png", instances.astype(np.uint16))
    _image(os.path.join(root, "cityscapes", "leftImg8bit", split, city, f"{city}_{frame}_leftImg8bit.png"))


def test_cityscapes(root):
    for split in ("train", "val"):
        _write_cityscapes(root, split)
    assert _prepare("cityscapes", root) == 0
    # cityscapesscripts numbers instances from 0: car ids 26000 and 26001.
    expected = dict(EXPECTED)
    expected[26000], expected[26001] = expected.pop(26001), expected.pop(26002)
    records = check_panoptic("cityscapes_fine_panoptic_val", 1, expected)
    assert records[0]["image_id"] == "aachen_000000_000019"
    check_instances("cityscapes_instance_val", 1, expected)
    check_instances("cityscapes_instance_train", 1, expected)


# ---------------------------------------------------------------- Mapillary Vistas


MAPILLARY_CATEGORIES = [  # readable names of v1.2's label list; ids as the json numbers them
    {"id": 1, "name": "Sky", "isthing": 0}, {"id": 2, "name": "Road", "isthing": 0},
    {"id": 3, "name": "Crosswalk - Plain", "isthing": 1},  # -> road: stuff, merged with Road
    {"id": 4, "name": "Car", "isthing": 1}, {"id": 5, "name": "Person", "isthing": 1},
    {"id": 6, "name": "Bird", "isthing": 1},  # not one of the 19
    {"id": 7, "name": "Building", "isthing": 0}]
MAPILLARY_SEGMENTS = {"sky": (11, 1, 0), "road_a": (12, 2, 0), "road_b": (13, 3, 0), "car_1": (14, 4, 0),
                      "car_2": (15, 4, 0), "crowd": (16, 5, 1), "unmapped": (17, 6, 0), "building": (18, 7, 0)}


def _write_mapillary(root, folder, panoptic_dir, key="k3y_-0"):
    base = os.path.join(root, "mapillary", folder)
    _image(os.path.join(base, "images", key + ".jpg"))
    _panoptic_png(os.path.join(base, panoptic_dir, key + ".png"),
                  _paint({p: sid for p, (sid, _, _) in MAPILLARY_SEGMENTS.items()}))
    segments = [{"id": sid, "category_id": c, "iscrowd": crowd, "area": 1, "bbox": [0, 0, 1, 1]}
                for sid, c, crowd in MAPILLARY_SEGMENTS.values()]
    with open(os.path.join(base, panoptic_dir, "panoptic_2018.json"), "w") as f:
        json.dump({"images": [{"id": key, "file_name": key + ".jpg", "width": W, "height": H}],
                   "annotations": [{"image_id": key, "file_name": key + ".png", "segments_info": segments}],
                   "categories": MAPILLARY_CATEGORIES}, f)


@pytest.mark.parametrize("panoptic_dir", ["v1.2/panoptic", "panoptic"])  # v2.0 and v1.x downloads
def test_mapillary(root, panoptic_dir):
    for folder in ("training", "validation"):
        _write_mapillary(root, folder, panoptic_dir)
    assert _prepare("mapillary", root) == 0
    check_panoptic("mapillary_panoptic_val", 1)
    check_instances("mapillary_instance_val", 1)
    check_panoptic("mapillary_panoptic_train", 1)


# ---------------------------------------------------------------- BDD100K


# part -> (category id of BDD100K's panoptic list, attributes, instance id)
BDD_SEGMENTS = {"sky": (30, 0, 1), "road_a": (7, 0, 2), "road_b": (7, 0, 3), "car_1": (35, 4, 4),
                "car_2": (35, 8, 5), "crowd": (31, 2, 6), "unmapped": (23, 0, 7), "building": (10, 0, 8)}


def _write_bdd(root, split, name="7d2f7975-e0c1c5a7", segments=BDD_SEGMENTS):
    rgba = _paint({p: (c, a, i >> 8, i & 255) for p, (c, a, i) in segments.items()}, np.uint8, 4)
    path = os.path.join(root, "bdd100k", "labels", "pan_seg", "bitmasks", split, name + ".png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    _image(os.path.join(root, "bdd100k", "images", "10k", split, name + ".jpg"))
    return path


def test_bdd100k_and_a_rerun_converts_nothing(root, capsys):
    for split in ("train", "val"):
        _write_bdd(root, split)
    assert _prepare("bdd100k", root) == 0
    check_panoptic("bdd100k_panoptic_val", 1)
    check_instances("bdd100k_instance_val", 1)
    capsys.readouterr()
    with open(os.path.join(root, "bdd100k/panoptic_cs19/val.json")) as f:
        first = json.load(f)
    assert _prepare("bdd100k", root) == 0
    assert "bdd100k val: converted 0, kept 1 up to date" in capsys.readouterr().out
    with open(os.path.join(root, "bdd100k/panoptic_cs19/val.json")) as f:
        assert json.load(f) == first  # rebuilt from the kept PNGs alone
    # --check-images decodes every image once and names the damaged ones.
    damaged = os.path.join(root, "bdd100k/images/10k/val/7d2f7975-e0c1c5a7.jpg")
    with open(damaged, "wb") as f:
        f.write(b"not a jpeg")
    assert _prepare("bdd100k", root, "--check-images") == 2
    assert f"{damaged}: unreadable image" in capsys.readouterr().err


def test_bdd100k_refuses_a_category_outside_its_list(root, capsys):
    _write_bdd(root, "train")
    bad = _write_bdd(root, "val", segments=dict(BDD_SEGMENTS, sky=(45, 0, 1)))
    assert _prepare("bdd100k", root) == 2
    err = capsys.readouterr().err
    assert bad in err and "[45]" in err and "0..40" in err


# ---------------------------------------------------------------- ACDC


ACDC_CATEGORIES = [{"id": i, "name": n, "isthing": t} for i, n, t in (
    (7, "road", 0), (11, "building", 0), (23, "sky", 0), (24, "person", 1), (26, "car", 1),
    (29, "caravan", 1))]  # caravan: a Cityscapes class outside the 19
ACDC_SEGMENTS = {"sky": (23, 23, 0), "road_a": (7, 7, 0), "road_b": (70, 7, 0), "car_1": (26000, 26, 0),
                 "car_2": (26001, 26, 0), "crowd": (24, 24, 1), "unmapped": (29000, 29, 0),
                 "building": (11, 11, 0)}


def _write_acdc(root, cond, split, seq="GOPR0475", frame="frame_000041"):
    stem = f"{seq}_{frame}_{cond}"
    _image(os.path.join(root, "acdc", "rgb_anon", cond, split, seq, stem + "_rgb_anon.png"))
    gt = os.path.join(root, "acdc", "gt_panoptic", cond)
    _panoptic_png(os.path.join(gt, split, seq, stem + "_gt_panoptic.png"),
                  _paint({p: sid for p, (sid, _, _) in ACDC_SEGMENTS.items()}))
    segments = [{"id": sid, "category_id": c, "iscrowd": crowd, "area": 1, "bbox": [0, 0, 1, 1]}
                for sid, c, crowd in ACDC_SEGMENTS.values()]
    with open(os.path.join(gt, f"{cond}_{split}_gt_panoptic.json"), "w") as f:
        json.dump({"images": [{"id": stem, "file_name": f"{cond}/{split}/{seq}/{stem}_rgb_anon.png"}],
                   "annotations": [{"image_id": stem, "file_name": f"{cond}/{split}/{seq}/{stem}_gt_panoptic.png",
                                    "segments_info": segments}], "categories": ACDC_CATEGORIES}, f)


def test_acdc(root):
    conditions = ("fog", "night", "rain", "snow")
    for cond in conditions:
        for split in ("train", "val"):
            _write_acdc(root, cond, split)
    assert _prepare("acdc", root) == 0
    everything = check_panoptic("acdc_panoptic_val", 4)
    check_instances("acdc_instance_val", 4)
    ids = []
    for cond in conditions:
        records = check_panoptic(f"acdc_panoptic_{cond}_val", 1)
        assert f"/{cond}/val/" in records[0]["file_name"]
        ids.append(records[0]["image_id"])
        check_instances(f"acdc_instance_{cond}_val", 1)
    # One id space: a condition's ids are those of its images in acdc_panoptic_val.
    assert ids == [r["image_id"] for r in everything] and len(set(ids)) == 4


def test_acdc_and_mapillary_refuse_categories_numbered_otherwise(root, capsys):
    for cond in ("fog", "night", "rain", "snow"):
        for split in ("train", "val"):
            _write_acdc(root, cond, split)
    path = os.path.join(root, "acdc", "gt_panoptic", "rain", "rain_val_gt_panoptic.json")
    with open(path) as f:
        data = json.load(f)
    data["categories"][0] = {"id": 0, "name": "road", "isthing": 0}  # a train-id numbering
    with open(path, "w") as f:
        json.dump(data, f)
    assert _prepare("acdc", root) == 2
    err = capsys.readouterr().err
    assert path in err and "not a Cityscapes label id" in err
    _write_mapillary(root, "training", "panoptic")
    path = os.path.join(root, "mapillary", "training", "panoptic", "panoptic_2018.json")
    with open(path) as f:
        data = json.load(f)
    for c in data["categories"]:  # machine names instead of the readable ones
        c["name"] = "construction--flat--" + c["name"].lower()
    with open(path, "w") as f:
        json.dump(data, f)
    assert _prepare("mapillary", root) == 2
    err = capsys.readouterr().err
    assert path in err and "readable" in err


# ---------------------------------------------------------------- SYNTHIA


def _write_synthia(root, name="0000000.png", cls=None):
    cls = cls or {"sky": 1, "road_a": 3, "road_b": 3, "car_1": 8, "car_2": 8, "crowd": 10,
                  "unmapped": 13, "building": 2}  # 13: parking-slot, not one of the 16
    inst = {"road_b": 5, "car_1": 1, "car_2": 2, "building": 9}  # stuff instance ids are dropped
    label = np.zeros((H, W, 3), np.uint16)
    label[..., 2] = _paint(cls)   # first channel (red): class; OpenCV writes BGR
    label[..., 1] = _paint(inst)  # second channel: instance id (0 for the crowd of people)
    path = os.path.join(root, "synthia", "GT", "LABELS", name)
    _save(path, label)
    _image(os.path.join(root, "synthia", "RGB", name))
    return path


def test_synthia(root, capsys):
    _write_synthia(root)
    assert _prepare("synthia", root) == 0
    check_panoptic("synthia_panoptic_train", 1)
    check_instances("synthia_instance_train", 1)
    bad = _write_synthia(root, "0000001.png", cls={"sky": 40})
    assert _prepare("synthia", root) == 2
    err = capsys.readouterr().err
    assert bad in err and "[40]" in err
