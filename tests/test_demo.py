"""tools/demo.py on the miniature model: image folders (with a corrupt file), a video, a
missing video, the metadata used to draw, and config overrides after --input."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

from conftest import REPO, config_path
from test_meta_arch import MINI

H, W = 64, 96
OPTS = [str(x) for x in MINI] + ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("rein_demo", os.path.join(REPO, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(demo, *args):
    return demo.main(["--config-file", config_path("rein_dinov2.yaml"), *args, *OPTS])


def random_image(seed, h=H, w=W):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_images_folder_with_a_corrupt_file(demo, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    images = {"a": random_image(0), "b": random_image(1)}
    for name, img in images.items():
        assert cv2.imwrite(str(src / f"{name}.png"), img)
    (src / "broken.png").write_bytes(b"this is not an image")
    (src / "notes.txt").write_text("not an image file: ignored")

    rc = run(demo, "--input", str(src), "--output", str(out), "--opacity", "0.6")

    assert rc != 0
    assert "broken.png" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    for name, img in images.items():
        overlay = cv2.imread(str(out / f"{name}.png"))
        assert overlay.shape == img.shape
        assert np.abs(overlay.astype(int) - img.astype(int)).mean() > 5  # an overlay was drawn


def test_glob_and_overrides_right_after_input(demo, tmp_path, monkeypatch):
    """--input's list stops at the first config key, so overrides may follow it directly;
    without --output the overlays go to ./demo_output."""
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"frame{i}.jpg"), random_image(i))
    monkeypatch.chdir(tmp_path)
    args = demo.parse_args(["--config-file", "x.yaml", "--input", "frame*.jpg", *OPTS])
    assert args.input == ["frame*.jpg"] and args.opts == OPTS
    assert run(demo, "--input", str(tmp_path / "frame*.jpg")) == 0
    assert sorted(os.listdir(tmp_path / "demo_output")) == ["frame0.png", "frame1.png"]


def test_video(demo, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    assert writer.isOpened()
    for i in range(5):
        writer.write(random_image(i))
    writer.release()

    assert run(demo, "--video-input", str(video), "--output", str(tmp_path / "out")) == 0

    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5
    assert all(f.shape == (H, W, 3) for f in frames)


def test_missing_video_is_a_clear_error(demo, tmp_path, capsys):
    missing = tmp_path / "nowhere.mp4"
    assert run(demo, "--video-input", str(missing), "--output", str(tmp_path / "out")) != 0
    err = capsys.readouterr().err
    assert "video file not found" in err and "nowhere.mp4" in err
    assert not (tmp_path / "out").exists()


def test_metadata_defaults_and_generic_names(demo):
    city = demo.demo_metadata(None, 19)
    assert city.stuff_classes[0] == "road" and city.stuff_classes[18] == "bicycle"
    assert city.stuff_colors[0] == [128, 64, 128]
    generic = demo.demo_metadata(None, 3)
    assert generic.stuff_classes == ["class 0", "class 1", "class 2"]
    assert len(generic.stuff_colors) == 3 and generic.thing_classes == generic.stuff_classes
