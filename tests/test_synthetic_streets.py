"""The procedural street-scene generator behind the CPU quick start."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from rein_d2.data.datasets.common import CITYSCAPES_CLASSES, CITYSCAPES_COLORS
from conftest import REPO
from rein_d2.data.synthetic_streets import (
    SPLITS,
    colorize,
    generate,
    make_mosaic,
    register_synthetic_streets,
    render_scene,
)

H, W, N = 256, 512, 40


@pytest.fixture(scope="module")
def frames():
    """40 frames per style, rendered once for the module."""
    return {
        style: [render_scene(np.random.default_rng([123, i]), H, W, style) for i in range(N)]
        for style in ("source", "target")
    }


def test_determinism_and_shapes():
    for style in ("source", "target"):
        a = render_scene(np.random.default_rng(5), H, W, style)
        b = render_scene(np.random.default_rng(5), H, W, style)
        c = render_scene(np.random.default_rng(6), H, W, style)
        assert a[0].shape == (H, W, 3) and a[0].dtype == np.uint8
        assert a[1].shape == (H, W) and a[1].dtype == np.uint8
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    img, lab = render_scene(np.random.default_rng(0), 120, 200, "target")
    assert img.shape == (120, 200, 3) and lab.shape == (120, 200)
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), H, W, "cartoon")


def test_labels_are_pure_train_ids(frames):
    for style, fs in frames.items():
        for _, lab in fs:
            # antialiased label drawing would leave blended values between ids (and > 18)
            assert int(lab.max()) <= 18, style
            assert set(np.unique(lab)) <= set(range(19))
        # the top row is sky, the bottom row road / sidewalk / terrain / objects on the ground
        assert np.mean([(lab[0] == 10).mean() for _, lab in fs]) > 0.2
        assert all(not np.isin(lab[-1], [10]).any() for _, lab in fs)


def test_every_class_appears_in_both_styles(frames):
    for style, fs in frames.items():
        present = set()
        for _, lab in fs:
            present |= set(np.unique(lab).tolist())
        missing = [CITYSCAPES_CLASSES[c] for c in range(19) if c not in present]
        assert not missing, f"{style}: classes never drawn in {N} frames: {missing}"


def _class_stats(fs):
    counts = np.zeros(19)
    sums = np.zeros((19, 3))
    for img, lab in fs:
        counts += np.bincount(lab.ravel(), minlength=19)[:19]
        for c in range(19):
            m = lab == c
            if m.any():
                sums[c] += img[m].reshape(-1, 3).astype(np.float64).sum(0)
    return counts / counts.sum(), sums / np.maximum(counts, 1)[:, None]


def test_style_shift_in_appearance_not_in_labels(frames):
    share_s, mean_s = _class_stats(frames["source"])
    share_t, mean_t = _class_stats(frames["target"])
    # appearance: the mean colour of big stuff classes differs clearly between the styles
    for c in (0, 2, 8, 10):  # road, building, vegetation, sky
        gap = np.linalg.norm(mean_s[c] - mean_t[c])
        assert gap > 30, f"{CITYSCAPES_CLASSES[c]}: mean colour gap only {gap:.1f}"
    # source is the saturated one: mean per-pixel saturation is clearly higher
    sat = {
        s: np.mean([cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].mean() for img, _ in fs])
        for s, fs in frames.items()
    }
    assert sat["source"] > 1.5 * sat["target"], sat
    # geometry: class frequencies are alike (within a factor 3 for classes above 1 %)
    for c in range(19):
        if max(share_s[c], share_t[c]) > 0.01:
            ratio = max(share_s[c], share_t[c]) / max(min(share_s[c], share_t[c]), 1e-9)
            assert ratio < 3, f"{CITYSCAPES_CLASSES[c]}: shares {share_s[c]:.4f} vs {share_t[c]:.4f}"


def test_generate_is_deterministic_and_resumable(tmp_path):
    dicts = generate(str(tmp_path), "demo", 3, "target", height=64, width=128, seed=4)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["00000.png", "00001.png", "00002.png"]
    for d in dicts:
        assert d["height"] == 64 and d["width"] == 128
        img = cv2.imread(d["file_name"], cv2.IMREAD_COLOR)
        lab = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 128, 3) and lab.shape == (64, 128) and lab.dtype == np.uint8
        assert lab.max() <= 18
    # the files hold exactly what render_scene gives for (seed, i); images are stored as RGB
    ref_img, ref_lab = render_scene(np.random.default_rng([4, 1]), 64, 128, "target")
    np.testing.assert_array_equal(cv2.imread(dicts[1]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED), ref_lab)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(dicts[1]["file_name"]), cv2.COLOR_BGR2RGB), ref_img)
    # resuming: existing pairs are skipped, missing ones are (re)made identically
    mtimes = {d["file_name"]: os.stat(d["file_name"]).st_mtime_ns for d in dicts}
    lab2 = cv2.imread(dicts[2]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    os.remove(dicts[2]["sem_seg_file_name"])
    again = generate(str(tmp_path), "demo", 4, "target", height=64, width=128, seed=4)
    assert again[:3] == dicts and len(again) == 4
    for d in dicts[:2]:
        assert os.stat(d["file_name"]).st_mtime_ns == mtimes[d["file_name"]]
    np.testing.assert_array_equal(cv2.imread(dicts[2]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED), lab2)
    files = sorted(os.listdir(tmp_path / "demo" / "images")) + sorted(os.listdir(tmp_path / "demo" / "labels"))
    assert len(files) == 8 and not any(".tmp" in f for f in files)


def test_registration_is_lazy_and_idempotent(tmp_path):
    for name in SPLITS:  # start from a clean catalog for these names
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    try:
        root = str(tmp_path / "synth")
        register_synthetic_streets(root, n_train=3, n_val=2, size=(64, 128))
        register_synthetic_streets(root, n_train=3, n_val=2, size=(64, 128))  # no error
        assert not os.path.exists(root)  # nothing generated before first access
        train = DatasetCatalog.get("synthstreets_source_train")
        val = DatasetCatalog.get("synthstreets_target_val")
        src_val = DatasetCatalog.get("synthstreets_source_val")
        assert (len(train), len(val), len(src_val)) == (3, 2, 2)
        assert all(os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"]) for d in train + val)
        assert "target_val" in val[0]["file_name"] and val[0]["height"] == 64
        # the three splits are different frames
        a = cv2.imread(train[0]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        b = cv2.imread(src_val[0]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        assert not np.array_equal(a, b)
        meta = MetadataCatalog.get("synthstreets_target_val")
        assert meta.stuff_classes == list(CITYSCAPES_CLASSES) and len(meta.stuff_colors) == 19
        assert meta.stuff_colors[0] == [128, 64, 128]
        assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    finally:
        for name in SPLITS:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
        register_synthetic_streets()  # the defaults rein_d2 registers at import


def test_defaults_are_registered_at_import_under_the_datasets_root(tmp_path, monkeypatch):
    import rein_d2  # noqa: F401
    assert set(SPLITS) <= set(DatasetCatalog.list())
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    import rein_d2.data.synthetic_streets as ss
    monkeypatch.setattr(ss, "generate", lambda root, split, n, *a: (root, split, n))
    assert DatasetCatalog.get("synthstreets_target_val") == (str(tmp_path / "synthstreets"), "target_val", 50)
    assert DatasetCatalog.get("synthstreets_source_train")[2] == 200


def test_the_generator_is_imported_only_when_its_datasets_are_loaded(tmp_path):
    code = f"""
import sys
import rein_d2
from detectron2.data import DatasetCatalog, MetadataCatalog
from rein_d2.data import register_synthetic_streets
assert "synthstreets_source_train" in DatasetCatalog.list()
assert "rein_d2.data.synthetic_streets" not in sys.modules, "imported by import rein_d2"
for name in list(DatasetCatalog.list()):
    if name.startswith("synthstreets_"):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
register_synthetic_streets({str(tmp_path)!r}, n_train=1, n_val=1, size=(16, 32))
assert "rein_d2.data.synthetic_streets" not in sys.modules
assert len(DatasetCatalog.get("synthstreets_target_val")) == 1
assert "rein_d2.data.synthetic_streets" in sys.modules
"""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_mosaic_and_colorize():
    pairs = [render_scene(np.random.default_rng(i), 32, 64, "source") for i in range(2)]
    m = make_mosaic(pairs)
    assert m.shape == (64, 128, 3) and m.dtype == np.uint8
    lab = np.array([[0, 10, 255]], np.uint8)
    np.testing.assert_array_equal(colorize(lab)[0], [CITYSCAPES_COLORS[0], CITYSCAPES_COLORS[10], (0, 0, 0)])


def test_generation_shows_progress_only_while_rendering(tmp_path, capsys):
    """Rendering a split (slow on first use) shows a progress bar on stderr naming the split and
    the frame count; a split already on disk, or progress=False, prints nothing."""
    generate(str(tmp_path), "demo", 3, "source", height=32, width=64, seed=1)
    err = capsys.readouterr().err
    assert "generating synthstreets demo (source)" in err and "3/3" in err
    generate(str(tmp_path), "demo", 3, "source", height=32, width=64, seed=1)
    generate(str(tmp_path / "quiet"), "demo", 1, "source", height=32, width=64, seed=1, progress=False)
    assert capsys.readouterr() == ("", "")
