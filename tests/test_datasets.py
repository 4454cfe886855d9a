"""Dataset registration and the prepare scripts, on miniature trees in the official layouts."""
import importlib
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import rein_d2.data  # noqa: F401  (registers the datasets)
from rein_d2.data.datasets import CITYSCAPES_CLASSES, DATASETS, ID_TO_TRAINID, check_count
from rein_d2.data.datasets.common import convert_labels, load_sem_seg_pairs
from rein_d2.data.datasets.labels import gtav_ids_to_trainids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CS = {c: i for i, c in enumerate(CITYSCAPES_CLASSES)}

# Spec section 6, written out independently of the implementation's tables.
CITYSCAPES_SPEC = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                   24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA_SPEC = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12,
                8: 13, 19: 15, 12: 17, 11: 18}


def _script(name):
    """The program of datasets/<name>.py (prepare_<dataset>): rein_d2.data.prepare.<dataset>."""
    return importlib.import_module(f"rein_d2.data.prepare.{name[len('prepare_'):]}")


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.zeros((2, 4, 3), np.uint8))


def _all_ids_label(max_id=256):
    """Every value 0..max_id-1 once (one row), so each mapping rule is checked per pixel."""
    return np.arange(max_id, dtype=np.int64).reshape(1, -1)


def _expected(mapping, values):
    return np.array([mapping.get(int(v), 255) for v in values.ravel()], np.uint8).reshape(values.shape)


def _load_label(d):
    return cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def _write_gtav(root, n=2):
    ids = _all_ids_label().astype(np.uint8)
    for i in range(n):
        _image(str(root / "gta" / "images" / f"{i:05d}.png"))
        img = Image.fromarray(ids, mode="P")
        img.putpalette(list(np.random.RandomState(0).randint(0, 255, 768)))
        os.makedirs(root / "gta" / "labels", exist_ok=True)
        img.save(root / "gta" / "labels" / f"{i:05d}.png")
    return ids


def test_classes_and_lut():
    assert CITYSCAPES_CLASSES == ["road", "sidewalk", "building", "wall", "fence", "pole",
                                  "traffic light", "traffic sign", "vegetation", "terrain", "sky",
                                  "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                                  "bicycle"]
    assert ID_TO_TRAINID.dtype == np.uint8 and ID_TO_TRAINID.shape == (256,)
    np.testing.assert_array_equal(ID_TO_TRAINID, _expected(CITYSCAPES_SPEC, np.arange(256)))


def test_gtav_prepare_and_load(root):
    ids = _write_gtav(root)
    assert _script("prepare_gtav").main(["--root", str(root), "--no-count-check", "--workers", "2"]) == 0
    dicts = DatasetCatalog.get("gtav_train")
    assert len(dicts) == 2 and dicts[0]["file_name"].endswith("gta/images/00000.png")
    for d in dicts:
        np.testing.assert_array_equal(_load_label(d), _expected(CITYSCAPES_SPEC, ids))
    meta = MetadataCatalog.get("gtav_train")
    assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg" and meta.eval_size is None
    assert len(meta.stuff_colors) == 19


def test_cityscapes_prepare_and_load(root):
    ids = _all_ids_label(34).astype(np.uint8)  # Cityscapes' label ids; others are refused (test_run_refusals)
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        _image(str(root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"))
        os.makedirs(root / "cityscapes" / "gtFine" / split / city)
        assert cv2.imwrite(str(root / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), ids)
    assert _script("prepare_cityscapes").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    for split in ("train", "val"):
        (d,) = DatasetCatalog.get(f"cityscapes_rein_{split}")
        assert d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png")
        np.testing.assert_array_equal(_load_label(d), _expected(CITYSCAPES_SPEC, ids))
    assert MetadataCatalog.get("cityscapes_rein_val").eval_size == (1024, 512)


def test_synthia_prepare_and_load(root):
    cls = np.concatenate([np.arange(256), [300, 1000, 65535]]).reshape(1, -1)
    label = np.zeros(cls.shape + (3,), np.uint16)
    label[..., 2] = cls  # red channel (cv2 BGR): class id
    label[..., 1] = 7  # instance id must not matter
    label[..., 0] = 3  # the blue channel holds a valid-looking id: must be ignored
    _image(str(root / "synthia" / "RGB" / "0000000.png"))
    os.makedirs(root / "synthia" / "GT" / "LABELS")
    assert cv2.imwrite(str(root / "synthia" / "GT" / "LABELS" / "0000000.png"), label)
    assert _script("prepare_synthia").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    (d,) = DatasetCatalog.get("synthia_train")
    np.testing.assert_array_equal(_load_label(d), _expected(SYNTHIA_SPEC, cls))
    assert not {CS["terrain"], CS["truck"], CS["train"]} & set(np.unique(_load_label(d)).tolist())


def test_resumable(root, capsys):
    _write_gtav(root)
    dst_dir = root / "gta" / "labels_trainid"
    os.makedirs(dst_dir)
    (dst_dir / ".00000.png.k2j4x9.tmp").write_bytes(b"half a file")  # left by a killed run
    prep = _script("prepare_gtav")
    prep.main(["--root", str(root), "--no-count-check", "--workers", "1"])
    assert "converted 2, skipped 0" in capsys.readouterr().out
    assert sorted(os.listdir(dst_dir)) == ["00000.png", "00001.png"]
    mtime = os.path.getmtime(dst_dir / "00000.png")
    prep.main(["--root", str(root), "--no-count-check", "--workers", "1"])
    assert "converted 0, skipped 2" in capsys.readouterr().out
    assert os.path.getmtime(dst_dir / "00000.png") == mtime
    # The library helper reports the same.
    pairs = [(str(root / "gta" / "labels" / f), str(dst_dir / f)) for f in ("00000.png", "00001.png")]
    assert convert_labels(pairs, gtav_ids_to_trainids, workers=1) == (0, 2)


def test_count_check(root):
    _write_gtav(root)
    with pytest.raises(RuntimeError, match=r"expected 24966 files but found 2"):
        _script("prepare_gtav").main(["--root", str(root), "--workers", "1"])
    with pytest.raises(RuntimeError, match=r"expected 500 .* found 499"):
        check_count("cityscapes_rein_val", 499, 500)


def test_missing_root_message(root):
    assert "gtav_train" in DATASETS  # registered although no data exists
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("gtav_train")
    msg = str(e.value)
    for part in ("DETECTRON2_DATASETS", str(root / "gta" / "images"), "gta/labels/*.png",
                 "datasets/prepare_gtav.py"):
        assert part in msg
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS"):
        _script("prepare_synthia").main(["--root", str(root), "--no-count-check"])


def test_unpaired_files_are_listed(root):
    _write_gtav(root)
    _script("prepare_gtav").main(["--root", str(root), "--no-count-check", "--workers", "1"])
    _image(str(root / "gta" / "images" / "09999.png"))
    with pytest.raises(FileNotFoundError, match=r"(?s)1 image file.*09999\.png"):
        DatasetCatalog.get("gtav_train")
    os.remove(root / "gta" / "images" / "09999.png")
    os.remove(root / "gta" / "images" / "00001.png")
    with pytest.raises(FileNotFoundError, match=r"(?s)1 label file.*labels_trainid/00001\.png"):
        load_sem_seg_pairs("gtav_train", "gta/images", "gta/labels_trainid", ".png", ".png")


# Mapillary readable name -> expected class (spec section 6), plus names that must be ignored.
MAPILLARY_SPEC = {
    "Road": "road", "Sidewalk": "sidewalk", "Building": "building", "Wall": "wall",
    "Fence": "fence", "Pole": "pole", "Traffic Light": "traffic light",
    "Vegetation": "vegetation", "Terrain": "terrain", "Sky": "sky", "Person": "person",
    "Car": "car", "Truck": "truck", "Bus": "bus", "Motorcycle": "motorcycle",
    "Bicycle": "bicycle", "Traffic Sign (Front)": "traffic sign",
    "Traffic Sign (Back)": "traffic sign", "Traffic Sign Frame": "traffic sign",
    "On Rails": "train", "Bicyclist": "rider", "Motorcyclist": "rider", "Other Rider": "rider",
    "Street Light": "pole", "Utility Pole": "pole", "Curb": "sidewalk", "Curb Cut": "sidewalk",
    "Pedestrian Area": "sidewalk", "Crosswalk - Plain": "road", "Parking": "road",
    "Bike Lane": "road", "Service Lane": "road", "Lane Marking - Crosswalk": "road",
    "Lane Marking - General": "road",
    "Rail Track": None, "Guard Rail": None, "Car Mount": None, "Unlabeled": None,
    "Bird": None, "Billboard": None, "Ego Vehicle": None, "Trailer": None,
}


def _write_mapillary(root, config="config_v1.2.json", labels="v1.2/labels"):
    """A miniature Mapillary tree; each label index covers a 2x2 block, so the halved label
    holds every index once. Returns the names in index order."""
    import json

    names = sorted(MAPILLARY_SPEC, key=lambda n: (len(n), n))  # index order unrelated to classes
    os.makedirs(root / "mapillary", exist_ok=True)
    with open(root / "mapillary" / config, "w") as f:
        json.dump({"labels": [{"readable": n, "name": n.lower()} for n in names]}, f)
    idx = np.repeat(np.repeat(np.arange(len(names), dtype=np.uint8).reshape(1, -1), 2, 0), 2, 1)
    for folder in ("training", "validation"):
        os.makedirs(root / "mapillary" / folder / "images", exist_ok=True)
        Image.fromarray(np.full(idx.shape + (3,), 120, np.uint8)).save(
            root / "mapillary" / folder / "images" / "abc.jpg")
        os.makedirs(root / "mapillary" / folder / labels)
        img = Image.fromarray(idx, mode="P")
        img.putpalette(list(range(256)) * 3)  # a full palette, as the official PNGs carry
        img.save(root / "mapillary" / folder / labels / "abc.png")
    return names


@pytest.mark.parametrize("layout", [("config_v1.2.json", "v1.2/labels"), ("config.json", "labels")],
                         ids=["v1.2 in the v2.0 download", "v1.x download"])
def test_mapillary_prepare_and_load(root, capsys, layout):
    names = _write_mapillary(root, *layout)
    args = ["--root", str(root), "--no-count-check", "--workers", "1"]
    assert _script("prepare_mapillary").main(args) == 0
    want = np.array([[255 if MAPILLARY_SPEC[n] is None else CS[MAPILLARY_SPEC[n]] for n in names]], np.uint8)
    full = np.repeat(np.repeat(want, 2, 0), 2, 1)
    for split, expected in (("train", full), ("val_full", full), ("val", want)):
        (d,) = DatasetCatalog.get(f"mapillary_{split}")
        np.testing.assert_array_equal(_load_label(d), expected)
        assert MetadataCatalog.get(f"mapillary_{split}").eval_size == (1024, 512)
    # mapillary_val is the reference's protocol: the image halved too, next to its label
    (d,) = DatasetCatalog.get("mapillary_val")
    assert d["file_name"].endswith("validation/half/images/abc.jpg")
    assert Image.open(d["file_name"]).size == (len(names), 1)
    assert "1 image(s) and 1 label(s) written" in capsys.readouterr().out
    assert _script("prepare_mapillary").main(args) == 0  # resumed: nothing to redo
    assert "0 image(s) and 0 label(s) written" in capsys.readouterr().out


def test_mapillary_halving_is_the_references(tmp_path):
    """PIL nearest to (w // 2, h // 2): on a 7x5 label the kept pixels are rows 1, 3 and
    columns 1, 3, 5 (PIL samples at floor((x + 0.5) * scale)); image: bicubic, same size."""
    from rein_d2.data.datasets.mapillary import halve_image, halve_label

    label = np.random.RandomState(0).randint(0, 19, (5, 7)).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / "l.png")
    np.testing.assert_array_equal(halve_label(str(tmp_path / "l.png")), label[[1, 3]][:, [1, 3, 5]])
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "i.jpg")
    halve_image((str(tmp_path / "i.jpg"), str(tmp_path / "half" / "i.jpg")))
    assert Image.open(tmp_path / "half" / "i.jpg").size == (3, 2)


def test_mapillary_missing_or_unknown_layout_says_where_and_what(root):
    with pytest.raises(FileNotFoundError) as e:
        _script("prepare_mapillary").main(["--root", str(root), "--workers", "1"])
    assert "DETECTRON2_DATASETS" in str(e.value) and "config_v1.2.json" in str(e.value)
    os.makedirs(root / "mapillary" / "validation" / "v2.0" / "labels")
    with pytest.raises(FileNotFoundError) as e:
        _script("prepare_mapillary").main(["--root", str(root), "--workers", "1"])
    msg = str(e.value)
    assert "config.json with validation/labels/ (v1.x download)" in msg and "DETECTRON2_DATASETS" in msg
    assert "mapillary/{training,validation}/v1.2/labels/*.png" in msg  # the expected layout


def _write_bdd(root, value=None):
    for split in ("train", "val"):
        _image(str(root / "bdd100k" / "images" / "10k" / split / "a.jpg"))
        mask = np.array([list(range(19)) + [255]], np.uint8)
        if value is not None:
            mask[0, 0] = value
        os.makedirs(root / "bdd100k" / "labels" / "sem_seg" / "masks" / split)
        assert cv2.imwrite(str(root / "bdd100k" / "labels" / "sem_seg" / "masks" / split / "a.png"), mask)


def test_bdd100k_check_and_load(root):
    _write_bdd(root)
    assert _script("prepare_bdd100k").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    (d,) = DatasetCatalog.get("bdd100k_sem_seg_val")
    assert d["file_name"].endswith("a.jpg")
    np.testing.assert_array_equal(_load_label(d), [list(range(19)) + [255]])
    assert MetadataCatalog.get("bdd100k_sem_seg_val").eval_size == (1280, 720)


def test_bdd100k_value_outside_mapping_names_file(root):
    _write_bdd(root, value=40)
    with pytest.raises(ValueError, match=r"masks/train/a\.png: values \[40\] outside the train ids") as e:
        _script("prepare_bdd100k").main(["--root", str(root), "--no-count-check", "--workers", "1"])
    assert "single-channel" not in str(e.value)  # the values are wrong, not the channels


def test_bdd100k_palette_mask_of_train_ids_is_accepted_and_a_colour_mask_is_named(root):
    """Train ids stored as palette indices are what the loaders read (PIL): accepted. A colour
    PNG is refused for its channels, not for its values."""
    _write_bdd(root)
    masks = root / "bdd100k" / "labels" / "sem_seg" / "masks"
    ids = np.array([list(range(19)) + [255]], np.uint8)
    img = Image.fromarray(ids, mode="P")
    img.putpalette(list(np.random.RandomState(1).randint(0, 255, 768)))  # colours unlike the ids
    img.save(masks / "val" / "a.png")
    assert _script("prepare_bdd100k").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    Image.fromarray(np.zeros((1, 20, 3), np.uint8)).save(masks / "val" / "a.png")
    with pytest.raises(ValueError, match=r"masks/val/a\.png: not a single-channel label"):
        _script("prepare_bdd100k").main(["--root", str(root), "--no-count-check", "--workers", "1"])


def test_an_extra_folder_level_on_one_side_is_named_as_such(root):
    _write_gtav(root)
    _script("prepare_gtav").main(["--root", str(root), "--no-count-check", "--workers", "1"])
    os.makedirs(root / "gta" / "images" / "part1")
    for i in range(2):
        os.rename(root / "gta" / "images" / f"{i:05d}.png", root / "gta" / "images" / "part1" / f"{i:05d}.png")
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("gtav_train")
    msg = str(e.value)
    assert "the image and label trees do not line up" in msg and "prepare_gtav" not in msg
    assert str(root / "gta" / "images" / "part1" / "00000.png") in msg
    assert str(root / "gta" / "labels_trainid" / "00000.png") in msg


def test_acdc_check_and_load(root):
    for cond in ("fog", "night", "rain", "snow"):
        for split in ("train", "val"):
            stem = f"GOPR0475_frame_00004{len(split)}"
            _image(str(root / "acdc" / "rgb_anon" / cond / split / "GOPR0475" / f"{stem}_rgb_anon.png"))
            gt = root / "acdc" / "gt" / cond / split / "GOPR0475"
            os.makedirs(gt)
            assert cv2.imwrite(str(gt / f"{stem}_gt_labelTrainIds.png"), np.full((2, 4), 13, np.uint8))
            cv2.imwrite(str(gt / f"{stem}_gt_labelIds.png"), np.full((2, 4), 26, np.uint8))  # ignored
    assert _script("prepare_acdc").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    (d,) = DatasetCatalog.get("acdc_night_val")
    assert d["sem_seg_file_name"].endswith("_gt_labelTrainIds.png")
    assert MetadataCatalog.get("acdc_snow_train").eval_size == (1920, 1080)


def test_urbansyn_prepare_and_load(root, capsys):
    """Official layout rgb/rgb_<NNNN>.png + ss/ss_<NNNN>.png: train ids kept, 19 (unlabelled)
    to ignore; a value outside UrbanSyn's encoding, or a colour file, stops the script naming it."""
    raw = np.concatenate([np.arange(20), [255]]).astype(np.uint8).reshape(1, -1)
    for i in (1, 2):
        _image(str(root / "urbansyn" / "rgb" / f"rgb_{i:04d}.png"))
        os.makedirs(root / "urbansyn" / "ss", exist_ok=True)
        Image.fromarray(np.roll(raw, i)).save(root / "urbansyn" / "ss" / f"ss_{i:04d}.png")
        Image.fromarray(np.zeros((1, 21, 3), np.uint8)).save(root / "urbansyn" / f"ss_color_{i}.png")  # not read
    assert _script("prepare_urbansyn").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    dicts = DatasetCatalog.get("urbansyn_train")
    assert [(os.path.basename(d["file_name"]), os.path.basename(d["sem_seg_file_name"])) for d in dicts] == [
        ("rgb_0001.png", "ss_0001.png"), ("rgb_0002.png", "ss_0002.png")]
    for i, d in zip((1, 2), dicts):
        expected = np.roll(np.array(list(range(19)) + [255, 255], np.uint8).reshape(1, -1), i)
        np.testing.assert_array_equal(_load_label(d), expected)
    assert MetadataCatalog.get("urbansyn_train").stuff_classes == CITYSCAPES_CLASSES
    assert DATASETS["urbansyn_train"]["size"] == 7539

    bad = raw.copy()
    bad[0, 3] = 33  # a Cityscapes label id, say: not UrbanSyn's encoding
    Image.fromarray(bad).save(root / "urbansyn" / "ss" / "ss_0003.png")
    capsys.readouterr()
    assert _script("prepare_urbansyn").run_prepare(
        _script("prepare_urbansyn").main, ["--root", str(root), "--no-count-check", "--workers", "1"]) == 2  # EXIT_REFUSED
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: ") and "ss_0003.png: values [33] outside UrbanSyn's train ids" in err, err
    os.remove(root / "urbansyn" / "ss" / "ss_0003.png")
    Image.fromarray(np.zeros((1, 21, 3), np.uint8)).save(root / "urbansyn" / "ss" / "ss_0004.png")
    with pytest.raises(ValueError, match="ss_0004.png: expected a palette .P. or 8-bit .L. PNG, got mode RGB"):
        _script("prepare_urbansyn").main(["--root", str(root), "--no-count-check", "--workers", "1"])


def test_cityscapes_one_sixteenth_is_every_16th_train_frame_sorted_by_path(root):
    """cityscapes_rein_train_1_16: 33 frames in two cities -> the 1st, 17th and 33rd by path."""
    frames = [("aachen", i) for i in range(20)] + [("bochum", i) for i in range(13)]
    label_ids = sorted(CITYSCAPES_SPEC)
    for k, (city, i) in enumerate(frames[::-1]):  # written in another order than the sorted one
        stem = f"{city}_{i:06d}_000019"
        _image(str(root / "cityscapes" / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png"))
        os.makedirs(root / "cityscapes" / "gtFine" / "train" / city, exist_ok=True)
        label = np.full((2, 4), label_ids[(len(frames) - 1 - k) % 19], np.uint8)
        label[0, 0] = 0  # unlabeled -> ignore
        assert cv2.imwrite(str(root / "cityscapes" / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png"), label)
    _image(str(root / "cityscapes" / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png"))
    os.makedirs(root / "cityscapes" / "gtFine" / "val" / "lindau")
    assert cv2.imwrite(str(root / "cityscapes" / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"),
                       np.zeros((2, 4), np.uint8))
    assert _script("prepare_cityscapes").main(["--root", str(root), "--no-count-check", "--workers", "1"]) == 0
    subset = DatasetCatalog.get("cityscapes_rein_train_1_16")
    assert [os.path.basename(d["file_name"]) for d in subset] == [
        "aachen_000000_000019_leftImg8bit.png", "aachen_000016_000019_leftImg8bit.png",
        "bochum_000012_000019_leftImg8bit.png"]
    for d, n in zip(subset, (0, 16, 32)):
        expected = np.full((2, 4), CITYSCAPES_SPEC[label_ids[n % 19]], np.uint8)
        expected[0, 0] = 255
        np.testing.assert_array_equal(_load_label(d), expected)
    assert len(DatasetCatalog.get("cityscapes_rein_train")) == 33
    assert DATASETS["cityscapes_rein_train_1_16"]["size"] == -(-2975 // 16) == 186
    assert MetadataCatalog.get("cityscapes_rein_train_1_16").domain == "cityscapes"
