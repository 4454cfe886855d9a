r"""Run a Rein model on images, a video or a webcam and write colour overlays.

    python tools/demo.py --config-file configs/rein_dinov2.yaml \
        --input photos/ [more.jpg "shots/*.png"] [--output demo_output] \
        MODEL.WEIGHTS weights/rein_dinov2_gtav.pth
    python tools/demo.py --config-file configs/rein_dinov2.yaml --video-input drive.mp4 \
        MODEL.WEIGHTS weights/rein_dinov2_gtav.pth
    python tools/demo.py --config-file configs/rein_dinov2.yaml --webcam --max-frames 300 \
        MODEL.WEIGHTS weights/rein_dinov2_gtav.pth

Images (files, folders of image files, globs) become <output>/<name>.png; a video becomes
<output>/<stem>.webm (VP8, which browsers play; same fps and size); the webcam (camera 0, nothing
shown) is recorded to <output>/webcam.webm until --max-frames or Ctrl-C. Overlays carry a legend
of the classes present, labels kept inside the frame and off each other, dark classes drawn
lighter, and instance colours kept across the frames of a video. Semantic predictions are drawn
with the class names and colours of DATASETS.TEST[0] (the 19 Cityscapes classes when it is not set;
generic "class i" names when the number of classes does not match); panoptic and instance
predictions are drawn when the model outputs them.

Inputs are never written over: when an overlay would land on an input file (--output is the
input folder and an input is itself a <stem>.png, or a video's folder holds <stem>.webm), the
demo refuses before loading the model and says which input and what --output to pass instead.
The output folder is created and test-written before the model is loaded, so a read-only or
mistyped --output is one line up front, not a failure per image after the whole inference.
Non-image files in a folder are skipped and counted; each unreadable (corrupt, truncated) image
is named on its own line, the others are drawn, and the exit status is then 2 (that of every
refusal, docs/GETTING_STARTED.md). A video whose
decoder stops before the container's frame count (a truncated file) keeps the frames written,
says how many of how many, and also exits with 2.
"""
import argparse
import glob
import os
import sys
import tempfile
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import tqdm
from PIL import UnidentifiedImageError

from rein_d2 import load_config
from rein_d2.data.dataset_mappers.instance import read_image_checked
from rein_d2.engine import check_weight_files
from rein_d2.predictor import Predictor
from rein_d2.utils.cli import EXIT_REFUSED, UserError, exit_on_user_error, reclaim_overrides, refuse_overwrite
from rein_d2.utils.files import IMAGE_EXTENSIONS, write_image_atomic
from rein_d2.utils.visualizer import OverlayDrawer

DEFAULT_OUTPUT = "demo_output"


def open_video_writer(path: str, fps: float, size: Tuple[int, int]):
    """A writer for ``path``: VP8 in WebM, which browsers play. An OpenCV built without libvpx
    falls back to MPEG-4 in .mp4 (the path's suffix is changed and the reason printed).
    Returns (writer, the path written)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    if writer.isOpened():
        return writer, path
    fallback = os.path.splitext(path)[0] + ".mp4"
    tqdm.tqdm.write(f"note: this OpenCV cannot encode VP8 WebM; writing MPEG-4 to {fallback} "
                    "(browsers may not play it: convert it with ffmpeg -c:v libx264)")
    return cv2.VideoWriter(fallback, cv2.VideoWriter_fourcc(*"mp4v"), fps, size), fallback


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[str], int]:
    """Image paths from files, folders (their image files, sorted) and globs, in the order
    given, duplicates removed; the error messages of inputs that name nothing; and the number
    of files in the folders skipped for not having an image extension (notes, videos...)."""
    paths, errors, skipped = [], [], 0
    for item in inputs:
        if os.path.isdir(item):
            files = [os.path.join(item, f) for f in os.listdir(item) if os.path.isfile(os.path.join(item, f))]
            found = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
            skipped += len(files) - len(found)
            if not found:
                errors.append(f"no image files in folder {item}")
        elif os.path.isfile(item):
            found = [item]
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                errors.append(f"no files match {item}")
        else:
            found = []
            errors.append(f"input not found: {item}")
        paths.extend(found)
    seen, unique = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, errors, skipped


def _output_names(paths: Sequence[str]) -> List[str]:
    """<stem>.png per path; a stem seen before gets _1, _2, ... so no overlay overwrites another."""
    used, names = set(), []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        name, k = stem, 0
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        names.append(name + ".png")
    return names


def _error(msg: str) -> None:
    tqdm.tqdm.write(f"error: {msg}", file=sys.stderr)


def refuse_overwriting_inputs(outputs: Sequence[str], inputs: Sequence[str], output_dir: str) -> None:
    """Raise a UserError when one of ``outputs`` is an existing input file, before anything is
    written (rein_d2.utils.cli.refuse_overwrite: by path, and by device and inode, so links and
    case-insensitive file systems cannot sneak an overwrite past the check)."""
    same_as_default = os.path.realpath(DEFAULT_OUTPUT) == os.path.realpath(output_dir)
    instead = output_dir.rstrip("/\\") + "_overlays" if same_as_default else DEFAULT_OUTPUT
    refuse_overwrite(outputs, inputs, f"--output {output_dir}",
                     f"pass an --output folder that holds none of the inputs, e.g. --output {instead}")


def ensure_writable_folder(folder: str) -> None:
    """Create ``folder`` if needed and write (then delete) a probe file in it: a read-only,
    full or mistyped --output fails here in one line, not once per input after the inference.
    A real write is the test because os.access says yes to root even on a read-only mount."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--output {folder} is a file, not a folder; pass a folder path for the overlays")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".demo_write_probe_", dir=folder)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write in the --output folder {folder} ({e.strerror or e}); "
                        f"pass a folder you can write to") from None


def _unreadable_reason(e: Exception) -> str:
    """Why an image could not be decoded, on one line (Pillow names a file object, not the file)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can decode (unknown format or corrupt data)"
    text = " ".join(str(e).split()) or type(e).__name__
    return "truncated or corrupt image data" if "truncated" in text.lower() else text


def run_images(predictor, draw, paths, outputs, output_dir, n_input_errors=0) -> int:
    """Draw each image of ``paths`` into the matching path of ``outputs``. Each image that
    cannot be read, drawn or written is named on its own line and the others go on; the exit
    status is 2 (EXIT_REFUSED) when anything (including ``n_input_errors`` inputs naming nothing) failed."""
    failed = []
    for path, out in zip(tqdm.tqdm(paths, desc="images", unit="img"), outputs):
        try:
            image = read_image_checked(path, "BGR")  # (16-bit greyscale scaled to 8 bits)
        except Exception as e:  # corrupt / unsupported file: report it and go on
            _error(f"cannot read image {path}: {_unreadable_reason(e.__cause__ or e)}; skipped")
            failed.append(path)
            continue
        try:
            overlay = draw(image, predictor(image))
        except Exception as e:
            _error(f"failed on image {path}: {type(e).__name__}: {' '.join(str(e).split())}")
            failed.append(path)
            continue
        try:  # checked before the rename: a full disk leaves no empty overlay behind
            write_image_atomic(out, overlay)
        except OSError as e:
            _error(str(e))
            failed.append(path)
    print(f"wrote {len(paths) - len(failed)} overlay(s) to {output_dir}")
    if failed or n_input_errors:
        print(f"{len(failed) + n_input_errors} input(s) failed, each named above", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def run_stream(predictor, draw, cap, out_path, total=None, max_frames=None, desc="frames",
               source=None) -> int:
    """Predict and draw every frame of an opened cv2.VideoCapture into ``out_path`` (WebM, the
    capture's fps, the frames' size) until the capture ends, ``max_frames`` frames or Ctrl-C.
    ``total`` is the container's frame count: a video ``source`` whose decoder stops before it
    (a truncated or corrupt file) keeps the frames written and exits with 2."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not np.isfinite(fps) or fps <= 0:
        fps = 30.0
    expected = min(total, max_frames) if total and max_frames else total
    writer, n, interrupted = None, 0, False
    bar = tqdm.tqdm(total=expected or max_frames, desc=desc, unit="frame")
    try:
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer, out_path = open_video_writer(out_path, fps, (w, h))
                if not writer.isOpened():
                    _error(f"cannot open {out_path} for writing")
                    return EXIT_REFUSED
            writer.write(draw(frame, predictor(frame)))
            n += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        tqdm.tqdm.write("interrupted: closing the output video")
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        _error(f"no frames could be read from {source or desc}")
        return EXIT_REFUSED
    if source is not None and expected and n < expected and not interrupted:
        _error(f"{source}: the decoder stopped after {n} of the {expected} frames the container "
               f"announces (truncated or corrupt file); wrote {n} frame(s) to {out_path}")
        return EXIT_REFUSED
    print(f"wrote {n} frame(s) to {out_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help="image files, folders of images or glob patterns")
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="record camera 0 (nothing is shown)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"output folder (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="T",
                        help="minimum score of the instances drawn (instance outputs only)")
    parser.add_argument("--opacity", type=float, default=0.5, metavar="A", help="opacity of the masks, 0..1")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="stop the webcam / video after N frames")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Parsed arguments; config overrides that --input's list swallowed (``--input a.jpg
    MODEL.WEIGHTS w.pth``) are moved back to ``opts``: everything from the first item that looks
    like a config key (``MODEL.WEIGHTS``, upper case with dots)."""
    args = reclaim_overrides(build_parser().parse_args(argv), "input")
    if args.input is not None and not args.input:
        build_parser().error("--input needs at least one image, folder or glob")
    return args


def setup_cfg(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    return cfg


@exit_on_user_error  # wrong or unsafe weights: one line, exit 2
def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.opacity <= 1.0:
        _error(f"--opacity must be in [0, 1], got {args.opacity}")
        return EXIT_REFUSED
    if args.max_frames is not None and args.max_frames <= 0:
        _error(f"--max-frames must be positive, got {args.max_frames}")
        return EXIT_REFUSED
    if args.video_input is not None and not os.path.isfile(args.video_input):
        _error(f"video file not found: {args.video_input}")
        return EXIT_REFUSED

    cfg = setup_cfg(args)
    check_weight_files(cfg)
    input_errors = []
    if args.input:
        paths, input_errors, skipped = expand_inputs(args.input)
        for e in input_errors:
            _error(e)
        if not paths:
            _error("no images to process")
            return EXIT_REFUSED
        if skipped:
            print(f"skipping {skipped} non-image file(s) in the input folder(s)")
        outputs = [os.path.join(args.output, name) for name in _output_names(paths)]
    elif args.video_input is not None:
        stem = os.path.splitext(os.path.basename(args.video_input))[0]
        paths, outputs = [args.video_input], [os.path.join(args.output, stem + ".webm")]
    else:
        paths, outputs = [], [os.path.join(args.output, "webcam.webm")]
    # Both before the model is built: nothing is lost to an unusable --output.
    refuse_overwriting_inputs(outputs, paths, args.output)
    ensure_writable_folder(args.output)
    # Images at the config's test size (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); a light
    # checkpoint (MODEL.TRAINED_WEIGHTS) lands on top of the VFM.
    model = Predictor(cfg)

    def predictor(image_bgr):
        return model(image_bgr).outputs
    draw = OverlayDrawer(model.metadata, opacity=args.opacity, confidence_threshold=args.confidence_threshold,
                         video=not args.input)

    if args.input:
        return run_images(predictor, draw, paths, outputs, args.output, len(input_errors))

    if args.video_input is not None:
        cap = cv2.VideoCapture(args.video_input)
        if not cap.isOpened():
            _error(f"cannot open video {args.video_input} (unsupported or corrupt file)")
            return EXIT_REFUSED
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))  # from the header: a truncated file keeps it
        desc = os.path.basename(args.video_input)
    else:
        cap = cv2.VideoCapture(0)
        if not cap.isOpened():
            _error("cannot open camera 0 (no webcam found or it is in use)")
            return EXIT_REFUSED
        total, desc = None, "webcam"
    return run_stream(predictor, draw, cap, outputs[0], total=total if total and total > 0 else None,
                      max_frames=args.max_frames, desc=desc, source=args.video_input)


if __name__ == "__main__":
    sys.exit(main())
