"""Shared pieces of rein_d2's semantic datasets: class tables, lazy registration and the
label-conversion helpers the ``datasets/prepare_<name>.py`` scripts use."""
import glob
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES

from ...utils.cli import UserError
from ...utils.files import write_image_atomic

IGNORE_LABEL = 255

# Train-id order of detectron2's own Cityscapes table (trainId 0..18).
_CATS = sorted((c for c in CITYSCAPES_CATEGORIES if 0 <= c["trainId"] < 19), key=lambda c: c["trainId"])
CITYSCAPES_CLASSES = [c["name"] for c in _CATS]
CITYSCAPES_COLORS = [tuple(c["color"]) for c in _CATS]


def _id_to_trainid():
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for c in _CATS:
        lut[c["id"]] = c["trainId"]
    return lut


# Cityscapes / GTAV label id -> train id (255 for every id outside the 19 classes).
ID_TO_TRAINID = _id_to_trainid()
VALID_TRAIN_IDS = frozenset(range(len(CITYSCAPES_CLASSES))) | {IGNORE_LABEL}


def datasets_root():
    return os.environ.get("DETECTRON2_DATASETS", "./datasets")


def _resolve(path):
    return path if os.path.isabs(path) else os.path.join(datasets_root(), path)


def _list_by_stem(root, suffix, prefix=""):
    """Map 'relative/path/stem' -> file for every file under root whose name is
    prefix + stem + suffix. Hidden folders are skipped: they hold no data (a custom dataset's
    converted labels may sit in .rein_labels/ below its own folder)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.endswith(suffix) and f.startswith(prefix) and len(f) > len(prefix) + len(suffix):
                rel = os.path.relpath(dirpath, root)
                stem = f[len(prefix): len(f) - len(suffix)]
                out[stem if rel == "." else os.path.join(rel, stem)] = os.path.join(dirpath, f)
    return out


def _fix(script):
    """What to do about a missing or unpaired file: run the preparation script, or, for a
    dataset of a description file (``script`` is that file), correct it."""
    return f"run {script}" if script.endswith(".py") else f"check the folders and patterns in {script}"


def _missing_root_error(name, directory, layout, script):
    if not script.endswith(".py"):
        return FileNotFoundError(f"Dataset '{name}': directory not found: {directory}; expected:\n"
                                 f"{layout}\n{_fix(script)} (folders are relative to it)")
    return FileNotFoundError(
        f"Dataset '{name}': directory not found: {directory}\n"
        f"rein_d2 looks for datasets under the environment variable DETECTRON2_DATASETS "
        f"(now {datasets_root()!r}; default './datasets').\n"
        f"Expected layout:\n{layout}\n"
        f"Download the official files into that layout, then run: python {script} "
        f"[--root $DETECTRON2_DATASETS]"
    )


def load_sem_seg_pairs(name, image_dir, label_dir, image_suffix, label_suffix, layout="", script=None,
                       image_prefix="", label_prefix=""):
    """Pair images and labels by their path relative to image_dir / label_dir, less the file
    name's prefix and suffix (``rgb/rgb_0001.png`` with ``ss/ss_0001.png``: prefixes "rgb_" and
    "ss_").

    Any unpaired file is an error (never silently dropped), so a half-finished preparation
    run or a partial download is noticed before training starts.
    """
    script = script or f"datasets/prepare_{name.split('_')[0]}.py"
    image_dir, label_dir = _resolve(image_dir), _resolve(label_dir)
    for d in (image_dir, label_dir):
        if not os.path.isdir(d):
            raise _missing_root_error(name, d, layout, script)
    images = _list_by_stem(image_dir, image_suffix, image_prefix)
    labels = _list_by_stem(label_dir, label_suffix, label_prefix)
    if not images:
        raise FileNotFoundError(
            f"Dataset '{name}': no '{image_prefix}*{image_suffix}' images under {image_dir} (empty split): "
            f"download or extract the images there (layout: datasets/README.md)")
    _refuse_misaligned_trees(name, images, labels, image_dir, label_dir)
    for what, have, lack, lack_dir, lack_suffix in (
        ("image", images, labels, label_dir, label_prefix + "*" + label_suffix),
        ("label", labels, images, image_dir, image_prefix + "*" + image_suffix),
    ):
        orphans = sorted(set(have) - set(lack))
        if orphans:
            shown = "\n  ".join(have[s] for s in orphans[:5])
            raise FileNotFoundError(
                f"Dataset '{name}': {len(orphans)} {what} file(s) have no counterpart "
                f"'{lack_suffix}' under {lack_dir} ({_fix(script)}?); first ones:\n  {shown}"
            )
    return [{"file_name": images[s], "sem_seg_file_name": labels[s]} for s in sorted(images)]


def _refuse_misaligned_trees(name, images, labels, image_dir, label_dir):
    """Unpaired images and labels that pair by file name but sit in other sub-folders (an
    extra folder level on one side, from unpacking an archive into a folder of its own): say
    that the trees do not line up and show one such pair, rather than suggest a preparation
    run that would not help."""
    unpaired_labels = {}
    for stem in set(labels) - set(images):
        unpaired_labels.setdefault(os.path.basename(stem), stem)
    for stem in sorted(set(images) - set(labels)):
        other = unpaired_labels.get(os.path.basename(stem))
        if other is not None:
            raise FileNotFoundError(
                f"Dataset '{name}': the image and label trees do not line up. The image\n  "
                f"{images[stem]}\nhas the label\n  {labels[other]}\nbut their paths below "
                f"{image_dir} and {label_dir} differ ('{os.path.dirname(stem) or '.'}' against "
                f"'{os.path.dirname(other) or '.'}'): move the files so that each image and its "
                f"label have the same sub-folders (layout: datasets/README.md)")


# detectron2's own datasets (COCO, LVIS, Cityscapes ...), registered when detectron2.data is
# imported: everything registered later is rein_d2's, a project's or the user's.
_DETECTRON2_NAMES = frozenset(DatasetCatalog.list())


def require_registered(names, key="DATASETS"):
    """Refuse, in one line, a dataset name that is not registered: which names rein_d2 (and
    the projects and the user) registered, and how to register one. detectron2's KeyError
    lists its ~100 COCO / LVIS names instead."""
    known = set(DatasetCatalog.list())
    for name in names:
        if name not in known:
            ours = sorted(known - _DETECTRON2_NAMES)
            raise UserError(
                f"{key}: dataset {name!r} is not registered. rein_d2's: {', '.join(ours)} (plus "
                "detectron2's own COCO / LVIS / Pascal names). To use another, register it "
                "before the run with rein_d2.data.datasets.register_semantic_dataset(name, "
                "image_dir, label_dir, image_suffix, label_suffix) or detectron2's "
                "DatasetCatalog.register (datasets/README.md)")


def dataset_dicts_checked(name):
    """DatasetCatalog.get(name), refusing an unregistered name and an empty split with the
    dataset and where its images were looked for (detectron2 would fail later, naming neither)."""
    require_registered([name])
    dicts = DatasetCatalog.get(name)
    if not dicts:
        where = getattr(MetadataCatalog.get(name), "image_root", None)
        where = f"under {where}" if where else "by its registered loader (no image_root in its metadata)"
        raise ValueError(f"Dataset '{name}' has no images (looked {where}): check that the split "
                         f"was downloaded and prepared (datasets/README.md)")
    return dicts


def register_semantic_dataset(
    name, image_dir, label_dir, image_suffix, label_suffix, eval_size=None, layout="", script=None,
    domain=None, classes=None, colors=None, ignore_label=IGNORE_LABEL, label_format="id",
    ignore_colors=(), image_prefix="", label_prefix="", converted_dir=None, subset_every=None,
    **metadata,
):
    """Register lazily: nothing is read (and nothing may be missing) until the loader runs.

    Relative dirs are taken under datasets_root() when the loader runs; the metadata's
    image_root / sem_seg_root record the root seen at registration.
    eval_size is (W, H) or None (evaluate at native size). ``domain`` (default: the name up to
    its first "_") tells the DG evaluation which test sets share a training set's domain.

    ``classes`` / ``colors`` (RGB per class; default: the 19 Cityscapes classes and colours)
    name the label space. Labels hold one class id per pixel (``label_format="id"``, not a class:
    ``ignore_label``) or are colour-coded (``"color"``: each pixel one of ``colors``, or of
    ``ignore_colors`` for ignore). Labels other than ids with ignore 255 are converted once, on
    first use, into ``converted_dir`` (rein_d2.data.datasets.custom); the loaded split then
    points at those id files. ``subset_every`` n: a fixed fraction of the split, its pairs
    sorted by path and every n-th kept from the first (1/n, rounded up). ``metadata`` is stored
    with the rest (e.g. description_file).
    """
    from .custom import check_label_space, conversion, convert_split

    classes, colors = check_label_space(name, classes, colors, ignore_label, label_format, ignore_colors)
    mapping = conversion(len(classes), colors, ignore_label, label_format, ignore_colors)

    def load():
        dicts = load_sem_seg_pairs(name, image_dir, label_dir, image_suffix, label_suffix, layout=layout,
                                   script=script, image_prefix=image_prefix, label_prefix=label_prefix)
        if subset_every:
            dicts = dicts[::subset_every]  # load_sem_seg_pairs sorts them by path
        if mapping is not None:
            out = converted_dir or os.path.join(os.path.dirname(_resolve(label_dir).rstrip(os.sep)),
                                                ".rein_labels", os.path.basename(label_dir.rstrip(os.sep)))
            dicts = convert_split(name, dicts, _resolve(label_dir), out, mapping)
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes),
        stuff_colors=[list(c) for c in colors],
        ignore_label=IGNORE_LABEL,  # the value of the labels loaded (converted ones included)
        evaluator_type="sem_seg",
        image_root=_resolve(image_dir),
        sem_seg_root=_resolve(label_dir),
        eval_size=tuple(eval_size) if eval_size is not None else None,
        domain=domain or name.split("_")[0],
        label_format=label_format,
        **({"subset": f"every {subset_every}th pair sorted by path, from the first"} if subset_every else {}),
        **metadata,
    )


# ---------------------------------------------------------------- preparation helpers


def colorize(label, colors=CITYSCAPES_COLORS):
    """Class-id label -> RGB with ``colors`` (default: the Cityscapes palette; ignore = black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)
    return lut[np.asarray(label, dtype=np.uint8)]


# Through a temporary file, checked, then renamed: an interrupted run or a full disk never
# leaves a half or empty PNG under the final name (rein_d2.utils.files).
write_png_atomic = write_image_atomic


def _named(fn, src):
    """fn(src), naming src in any error that does not (PIL's "image file is truncated" does
    not), so that one line tells which file to replace."""
    try:
        return fn(src)
    except Exception as e:
        if src in str(e):
            raise
        raise OSError(f"{src}: {type(e).__name__}: {e} (damaged or incomplete file: "
                      f"download it again, then rerun)") from e


def _convert_one(job):
    fn, src, dst = job
    write_png_atomic(dst, np.ascontiguousarray(_named(fn, src), dtype=np.uint8))


def _check_one(job):
    fn, src, _ = job
    _named(fn, src)


def exit_with_parent(parent_pid: int, period: float = 0.5) -> None:
    """In a worker process: exit as soon as ``parent_pid`` is no longer its parent (the parent
    died and the worker was re-parented), so that no orphan goes on writing outputs."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(period)
        os._exit(1)

    threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def parallel_imap(jobs, worker, workers, desc):
    """worker(job) for every job, in order, in-process or in `workers` processes."""
    from tqdm import tqdm

    if workers <= 1 or not jobs:
        for j in tqdm(jobs, desc=desc):
            yield worker(j)
        return
    # Spawned, not forked: a worker forked from a process whose torch, OpenCV or tqdm threads
    # hold a lock at that moment can wait on it forever (it hung a CI run for 80 minutes).
    # Each worker exits when this process dies (kill -9 included), not after its queued jobs.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        yield from tqdm(pool.map(worker, jobs, chunksize=16), total=len(jobs), desc=desc)


def _run(jobs, worker, workers, desc):
    for _ in parallel_imap(jobs, worker, workers, desc):
        pass


def _up_to_date(src, dst):
    # A raw label edited or downloaded again after the last run is newer than its output.
    return os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src)


def convert_labels(pairs, fn, workers=1, desc="labels"):
    """Convert every (src, dst) with fn(src) -> uint8 train-id array, in parallel.

    Resumable: dst files at least as new as their src are skipped. fn must be picklable (a
    top-level function or functools.partial of one). Returns (converted, skipped).
    """
    for folder in {os.path.dirname(d) for _, d in pairs}:  # temporaries of a killed run
        for stale in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
            os.remove(stale)
    jobs = [(fn, s, d) for s, d in pairs if not _up_to_date(s, d)]
    _run(jobs, _convert_one, workers, desc)
    return len(jobs), len(pairs) - len(jobs)


def check_labels(files, fn, workers=1, desc="check"):
    """Run a validating fn(path) over files in parallel (it raises on a bad file)."""
    _run([(fn, f, None) for f in files], _check_one, workers, desc)


# ---------------------------------------------------------------- image check (--check-images)

CHECKED_IMAGES_RECORD = ".rein_checked_images.json"


def image_problem(path):
    """None if PIL (detectron2's reader) decodes the whole image, else why not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # decodes every pixel: a truncated file fails here, not at open
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _stamp(path):
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size]


def _load_record(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # none yet, or cut short: check everything again
        return {}


def _save_record(path, record):
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def check_images(name, root, spec, workers=1):
    """Decode every image of a split; return ["<path>: <why>"] for each unreadable one.

    Resumable: images decoded before, unchanged since (mtime and size), are recorded in
    ``<label dir>/.rein_checked_images.json`` and not decoded again.
    """
    short = name.split("_")[0]
    image_dir = require_dir(short, os.path.join(root, spec["image_dir"]), spec["layout"], spec["script"])
    record_path = os.path.join(root, spec["label_dir"], CHECKED_IMAGES_RECORD)
    record = _load_record(record_path)
    files = find_files(image_dir, spec["image_suffix"])
    stamps = {f: _stamp(f) for f in files}
    rel = {f: os.path.relpath(f, image_dir) for f in files}
    todo = [f for f in files if record.get(rel[f]) != stamps[f]]
    bad = []
    try:
        for i, problem in enumerate(parallel_imap(todo, image_problem, workers, f"{name} images")):
            f = todo[i]
            if problem is None:
                record[rel[f]] = stamps[f]
            else:
                record.pop(rel[f], None)
                bad.append(f"{f}: unreadable image ({problem})")
    finally:  # keep what was checked, also when interrupted
        _save_record(record_path, record)
    print(f"{name}: {len(files)} images, {len(todo)} decoded, {len(files) - len(todo)} "
          f"unchanged since an earlier check, {len(bad)} unreadable")
    return bad


def check_all_images(root, specs, workers=1):
    """check_images over {name: spec}; print every unreadable image (one line each), then
    raise once for all of them, so that no training run starts on a damaged download."""
    import sys

    bad = [line for name, spec in specs.items() for line in check_images(name, root, spec, workers)]
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        raise RuntimeError(f"{len(bad)} unreadable image(s), listed above: download them again, "
                           f"then rerun with --check-images")


def check_count(name, found, expected):
    if found != expected:
        raise RuntimeError(
            f"Dataset '{name}': expected {expected} files but found {found} "
            f"(partial download? pass --no-count-check to skip this check)"
        )


def read_label(path, flags=cv2.IMREAD_UNCHANGED):
    arr = cv2.imread(path, flags)
    if arr is None:
        raise OSError(f"could not read label image {path}")
    return arr


def check_train_ids(path):
    """Raise naming the file if an (already train-id) label is not one channel or holds a
    value outside 0..18, 255. Read with PIL, as the training and evaluation loaders read it: a
    palette PNG holds its ids as palette indices (OpenCV would expand them to colours)."""
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{path}: not a single-channel label (shape {arr.shape}, PIL mode "
                         f"{img.mode}): expected one train id per pixel")
    bad = sorted(set(np.unique(arr).tolist()) - VALID_TRAIN_IDS)
    if bad:
        raise ValueError(f"{path}: values {bad[:10]} outside the train ids 0..18 and 255 "
                         f"(ignore): is this an unconverted label?")
    return arr


def require_dir(name, directory, layout="", script=None):
    """Used by the prepare scripts: fail with the same guidance as the dataset loaders."""
    if not os.path.isdir(directory):
        raise _missing_root_error(name, directory, layout, script or f"datasets/prepare_{name}.py")
    return directory


def find_files(root, suffix):
    """Sorted files under root (recursively) ending with suffix."""
    return sorted(_list_by_stem(root, suffix).values())


# The reference's converters (mmseg tools/convert_datasets) write their train-id files next to
# the raw labels, in the same folder: these are outputs, never raw labels.
REFERENCE_OUTPUT_SUFFIX = "_labelTrainIds.png"


def convert_folder(dataset: str, root: str, src_rel: str, dst_rel: str, fn, workers: int,
                   spec: dict, count_check: bool = True):
    """Convert every PNG label under ``root/src_rel`` into ``root/dst_rel`` (same relative
    paths) with ``fn``, resumably, then check the count against ``spec["size"]``."""
    short = dataset.split("_")[0]
    src_dir = require_dir(short, os.path.join(root, src_rel), spec["layout"], spec["script"])
    dst_dir = os.path.join(root, dst_rel)
    desc = dataset.replace("_", " ")
    srcs = []
    reference_outputs = 0
    for f in find_files(src_dir, ".png"):
        if f.endswith(REFERENCE_OUTPUT_SUFFIX):
            reference_outputs += 1
        else:
            srcs.append(f)
    if reference_outputs:
        print(f"{desc}: ignored {reference_outputs} '*{REFERENCE_OUTPUT_SUFFIX}' file(s) in "
              f"{src_dir} (left by the reference's converter; not raw labels)")
    pairs = [(s, os.path.join(dst_dir, os.path.relpath(s, src_dir))) for s in srcs]
    done, skipped = convert_labels(pairs, fn, workers, desc=desc)
    print(f"{desc}: converted {done}, skipped {skipped} up to date")
    if count_check:
        check_count(dataset, len(srcs), spec["size"])
    return 0
