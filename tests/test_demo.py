"""tools/demo.py on the miniature model: image folders (with corrupt and non-image files), a
video, a truncated video, a missing video, outputs that would overwrite an input or cannot be
written, the metadata used to draw, and config overrides after --input."""
import os

import cv2
import numpy as np

from conftest import config_path, error_lines
from rein_d2.tools import demo  # what tools/demo.py runs
from test_meta_arch import MINI

H, W = 64, 96
OPTS = [str(x) for x in MINI] + ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]


def run(*args):
    return demo.main(["--config-file", config_path("rein_dinov2.yaml"), *args, *OPTS])


def random_image(seed, h=H, w=W):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _truncated(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_folder_of_good_corrupt_and_non_image_files(tmp_path, capsys):
    """Each corrupt image (truncated PNG / JPEG, text renamed .png, empty file) is named on its
    own line, non-images are skipped with a count, the good images are drawn, exit status 2."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    images = {"a": random_image(0), "b": random_image(1)}
    for name, img in images.items():
        assert cv2.imwrite(str(src / f"{name}.png"), img)
    smooth = cv2.GaussianBlur(random_image(2), (0, 0), 3)
    assert cv2.imwrite(str(src / "cut.png"), smooth) and cv2.imwrite(str(src / "cut_jpeg.jpg"), smooth)
    _truncated(src / "cut.png")
    _truncated(src / "cut_jpeg.jpg")
    (src / "broken.png").write_bytes(b"this is not an image")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image file: skipped")

    rc = run("--input", str(src), "--output", str(out), "--opacity", "0.6")

    captured = capsys.readouterr()
    assert rc == 2
    assert "skipping 1 non-image file(s)" in captured.out and "notes.txt" not in captured.err
    errors = error_lines(captured.err)
    for bad in ("cut.png", "cut_jpeg.jpg", "broken.png", "empty.png"):
        named = [line for line in errors if os.path.join(str(src), bad) in line]
        assert len(named) == 1, (bad, errors)
        assert "BufferedReader" not in named[0]  # the file, not Pillow's file object
    assert len(errors) == 4
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    for name, img in images.items():
        overlay = cv2.imread(str(out / f"{name}.png"))
        assert overlay.shape == img.shape
        assert np.abs(overlay.astype(int) - img.astype(int)).mean() > 5  # an overlay was drawn


def _no_model(monkeypatch):
    """Make building the model fail the test: the checks under test must come before it."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was built before the output was checked")
    monkeypatch.setattr(demo, "Predictor", fail)


def _write_video(path, n, fourcc="MJPG"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(random_image(i))
    writer.release()


def test_output_folder_holding_the_inputs_is_refused(tmp_path, capsys, monkeypatch):
    """--output = the input folder: a.png's overlay would be a.png. Refused up front in one
    line naming the input and another --output; the inputs are untouched."""
    _no_model(monkeypatch)
    src = tmp_path / "photos"
    src.mkdir()
    for i, name in enumerate(("a.png", "b.jpg")):
        assert cv2.imwrite(str(src / name), random_image(i))
    before = {p.name: p.read_bytes() for p in src.iterdir()}

    assert run("--input", str(src), "--output", str(src)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert str(src / "a.png") in errors[0] and "--output demo_output" in errors[0]
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # nothing written or added

    # an input file named directly, and a video whose overlay would be its own name
    assert run("--input", str(src / "a.png"), "--output", str(src)) == 2
    _write_video(src / "clip.webm", 2, "VP80")  # its overlay would be clip.webm
    assert run("--video-input", str(src / "clip.webm"), "--output", str(src)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 2 and str(src / "clip.webm") in errors[1]


def test_unusable_output_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    """Refused in one line before any inference: --output under a file, --output that is a
    file, and a folder where writing fails (simulated: root writes in a 0o555 folder)."""
    _no_model(monkeypatch)
    image = tmp_path / "a.png"
    assert cv2.imwrite(str(image), random_image(0))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file")

    assert run("--input", str(image), "--output", str(a_file / "out")) == 2
    assert run("--input", str(image), "--output", str(a_file)) == 2
    readonly = tmp_path / "readonly"
    readonly.mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(demo.tempfile, "mkstemp", denied)
    assert run("--input", str(image), "--output", str(readonly)) == 2

    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 3, errors
    assert "cannot write" in errors[0] and str(a_file / "out") in errors[0]
    assert "is a file, not a folder" in errors[1]
    assert "cannot write" in errors[2] and "Permission denied" in errors[2] and str(readonly) in errors[2]
    assert a_file.read_text() == "a file" and os.listdir(readonly) == []


def test_truncated_video_is_an_error(tmp_path, capsys):
    """The decoder stops half way through a truncated MJPG .avi: the frames read are written,
    one line says how many of how many, exit status 2."""
    video = tmp_path / "drive.avi"
    _write_video(video, 10)
    _truncated(video)
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 10  # the header survives the cut
    cap.release()

    assert run("--video-input", str(video), "--output", str(tmp_path / "out")) == 2

    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(video) in errors[0] and "of the 10 frames" in errors[0]
    written = cv2.VideoCapture(str(tmp_path / "out" / "drive.webm"))
    n = int(written.get(cv2.CAP_PROP_FRAME_COUNT))
    written.release()
    assert 0 < n < 10 and f"after {n} of the 10" in errors[0]


def test_glob_and_overrides_right_after_input(tmp_path, monkeypatch):
    """--input's list stops at the first config key, so overrides may follow it directly;
    without --output the overlays go to ./demo_output."""
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"frame{i}.jpg"), random_image(i))
    monkeypatch.chdir(tmp_path)
    args = demo.parse_args(["--config-file", "x.yaml", "--input", "frame*.jpg", *OPTS])
    assert args.input == ["frame*.jpg"] and args.opts == OPTS
    assert run("--input", str(tmp_path / "frame*.jpg")) == 0
    assert sorted(os.listdir(tmp_path / "demo_output")) == ["frame0.png", "frame1.png"]


def test_video(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    assert writer.isOpened()
    for i in range(5):
        writer.write(random_image(i))
    writer.release()

    assert run("--video-input", str(video), "--output", str(tmp_path / "out")) == 0

    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.webm"))
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


def test_missing_video_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.mp4"
    assert run("--video-input", str(missing), "--output", str(tmp_path / "out")) != 0
    err = capsys.readouterr().err
    assert "video file not found" in err and "nowhere.mp4" in err
    assert not (tmp_path / "out").exists()


def test_metadata_defaults_and_generic_names():
    from rein_d2.utils.visualizer import demo_metadata

    city = demo_metadata(None, 19)
    assert city.stuff_classes[0] == "road" and city.stuff_classes[18] == "bicycle"
    assert city.stuff_colors[0] == [128, 64, 128]
    generic = demo_metadata(None, 3)
    assert generic.stuff_classes == ["class 0", "class 1", "class 2"]
    assert len(generic.stuff_colors) == 3 and generic.thing_classes == generic.stuff_classes
