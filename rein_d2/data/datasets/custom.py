"""A user's own semantic dataset, with no code: its classes, colours, label format and layout
come from a small description file (YAML or JSON) next to the data, registered by naming the
file in the config's DATASETS.DESCRIPTIONS (docs/CUSTOM_DATA.md). Colour-coded labels, and id
labels whose ignore value is not 255, are converted once into class-id PNGs (ignore 255) on
first use; the conversion is keyed by the palette, so a changed description converts again."""
import functools
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ...utils.cli import UserError
from .common import IGNORE_LABEL, _up_to_date, convert_labels

__all__ = ["DESCRIPTION_KEYS", "check_num_classes", "color_label_to_ids", "id_label_to_ids",
           "read_description", "register_description", "register_descriptions"]

# key -> what it holds, as the error for an unknown key lists them.
DESCRIPTION_KEYS = {
    "name": "prefix of the registered names (<name>_<split>)",
    "classes": "class names, in class-id order",
    "colors": "RGB colour per class (drawing; the palette of colour-coded labels)",
    "label_format": '"id" (one class id per pixel) or "color" (colour-coded)',
    "ignore_label": "id labels: the value that is no class (default 255)",
    "ignore_colors": "color labels: colours that are no class",
    "image_pattern": 'image file name, "{name}" standing for the shared part (default "{name}.jpg")',
    "label_pattern": 'label file name (default "{name}.png")',
    "eval_size": "[W, H] the images are resized to for evaluation (default: as they are)",
    "converted_dir": "where converted labels are written (default .rein_labels beside the file)",
    "splits": "split -> {images: folder, labels: folder, domain: optional}",
}
LABEL_FORMATS = ("id", "color")


def _palette(n: int) -> List[List[int]]:
    from detectron2.utils.colormap import colormap

    base = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [base[i % len(base)] for i in range(n)]


def check_label_space(name: str, classes, colors, ignore_label, label_format, ignore_colors):
    """(classes, colors) checked; the 19 Cityscapes ones when neither is given. Raises
    UserError naming the dataset and what to fix."""
    from .common import CITYSCAPES_CLASSES, CITYSCAPES_COLORS

    if classes is None and colors is None:
        classes, colors = CITYSCAPES_CLASSES, CITYSCAPES_COLORS
    where = f"dataset '{name}'"
    if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise UserError(f"{where}: classes must be a non-empty list of distinct names, got {classes!r}")
    if label_format not in LABEL_FORMATS:
        raise UserError(f"{where}: label_format is {label_format!r}; expected one of {', '.join(LABEL_FORMATS)}")
    if colors is None:
        if label_format == "color":
            raise UserError(f"{where}: colour-coded labels need colors, one [R, G, B] per class")
        colors = _palette(len(classes))
    colors = [_rgb(where, "colors", c) for c in colors]
    if len(colors) != len(classes):
        raise UserError(f"{where}: {len(colors)} colors for {len(classes)} classes: give one "
                        f"[R, G, B] per class")
    ignore_colors = [_rgb(where, "ignore_colors", c) for c in ignore_colors or ()]
    if label_format == "color":
        seen = {}
        for i, c in enumerate(colors + ignore_colors):
            if tuple(c) in seen:
                raise UserError(f"{where}: colour {tuple(c)} is given twice (entries {seen[tuple(c)]} "
                                f"and {i} of colors + ignore_colors): colour-coded labels need "
                                f"one colour per class")
            seen[tuple(c)] = i
    if len(classes) > 255:  # (before ignore_label, whose range it would leave empty)
        raise UserError(f"{where}: {len(classes)} classes; at most 255 fit 8-bit labels")
    if not isinstance(ignore_label, int) or not 0 <= ignore_label <= 255 or ignore_label < len(classes):
        raise UserError(f"{where}: ignore_label is {ignore_label!r}; expected a value in "
                        f"{len(classes)}..255 (class ids are 0..{len(classes) - 1})")
    return list(classes), colors


def _rgb(where, key, c):
    if not (isinstance(c, (list, tuple)) and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
        raise UserError(f"{where}: {key} entry {c!r} is not [R, G, B] with values 0..255")
    return [int(v) for v in c]


def conversion(num_classes, colors, ignore_label, label_format, ignore_colors) -> Optional[dict]:
    """How labels become class ids with ignore 255; None where they already are."""
    if label_format == "color":
        return {"format": "color", "colors": [list(c) for c in colors],
                "ignore_colors": [list(c) for c in ignore_colors or ()]}
    if ignore_label != IGNORE_LABEL:
        return {"format": "id", "num_classes": num_classes, "ignore_label": ignore_label}
    return None


def _code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _where(mask: np.ndarray) -> str:
    y, x = np.argwhere(mask)[0]
    return f"first at x={x}, y={y}; {int(mask.sum())} pixels"


def color_label_to_ids(path: str, colors: Sequence, ignore_colors: Sequence = ()) -> np.ndarray:
    """A colour-coded label -> class ids (the index of its colour in ``colors``; 255 for
    ``ignore_colors``). A colour in neither is refused, with where it occurs."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    table = np.array([_code(np.array(c)) for c in list(colors) + list(ignore_colors)], np.int64)
    ids = np.array(list(range(len(colors))) + [IGNORE_LABEL] * len(ignore_colors), np.uint8)
    order = np.argsort(table)
    table, ids = table[order], ids[order]
    codes = _code(rgb)
    pos = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    known = table[pos] == codes
    if not known.all():
        unknown = np.unique(codes[~known])
        shown = "; ".join(f"{((c >> 16) & 255, (c >> 8) & 255, c & 255)} ({_where(codes == c)})"
                          for c in unknown[:5].tolist())
        more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
        raise ValueError(f"{path}: colour(s) in neither colors nor ignore_colors of the dataset "
                         f"description: {shown}{more}; add each to colors (a class) or to "
                         f"ignore_colors")
    return ids[pos]


def id_label_to_ids(path: str, num_classes: int, ignore_label: int) -> np.ndarray:
    """A class-id label whose ignore value is ``ignore_label`` -> the same ids, ignore 255."""
    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{path}: not a single-channel label (shape {arr.shape}): class-id "
                         f"labels hold one id per pixel; colour-coded labels need label_format: color")
    bad = (arr >= num_classes) & (arr != ignore_label)
    if bad.any():
        values = np.unique(arr[bad])[:10].tolist()
        raise ValueError(f"{path}: values {values} are neither a class id 0..{num_classes - 1} nor "
                         f"ignore_label {ignore_label} ({_where(bad)})")
    out = arr.astype(np.uint8)
    out[arr == ignore_label] = IGNORE_LABEL
    return out


def _converter(mapping: dict):
    if mapping["format"] == "color":
        return functools.partial(color_label_to_ids, colors=tuple(map(tuple, mapping["colors"])),
                                 ignore_colors=tuple(map(tuple, mapping["ignore_colors"])))
    return functools.partial(id_label_to_ids, num_classes=mapping["num_classes"],
                             ignore_label=mapping["ignore_label"])


def convert_split(name: str, dicts: List[dict], label_dir: str, out_dir: str, mapping: dict) -> List[dict]:
    """Convert the split's labels into ``out_dir/<key>/`` (``key`` a hash of ``mapping``: a
    changed palette converts again; unchanged labels are not converted twice) and point the
    dataset dicts at the converted files."""
    key = hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:12]
    out_dir = os.path.join(out_dir, key)
    pairs = []
    for d in dicts:
        rel = os.path.splitext(os.path.relpath(d["sem_seg_file_name"], label_dir))[0] + ".png"
        pairs.append((d["sem_seg_file_name"], os.path.join(out_dir, rel)))
    from detectron2.utils import comm

    # Under DDP every process loads the split: the first converts, the others wait for it
    # (two writers of one file would race on its temporary name).
    todo = [p for p in pairs if not _up_to_date(*p)] if comm.is_main_process() else []
    if todo:  # many labels: in parallel (a process pool's start costs ~1 s, not worth it for few)
        workers = min(8, os.cpu_count() or 1) if len(todo) >= 64 else 1
        convert_labels(todo, _converter(mapping), workers, desc=f"{name}: labels to class ids")
    comm.synchronize()
    return [dict(d, sem_seg_file_name=dst) for d, (_, dst) in zip(dicts, pairs)]


# ---------------------------------------------------------------- description files


def read_description(path: str) -> dict:
    """The description file as a dict (JSON, or YAML read with yaml.safe_load: no code runs)."""
    import yaml

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"dataset description {path}: cannot read it ({e.strerror})") from None
    try:
        data = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise UserError(f"dataset description {path}: not valid {'JSON' if path.lower().endswith('.json') else 'YAML'} "
                        f"({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"dataset description {path}: expected a mapping of keys "
                        f"({', '.join(DESCRIPTION_KEYS)}), got {type(data).__name__}")
    unknown = sorted(set(data) - set(DESCRIPTION_KEYS))
    if unknown:
        raise UserError(f"dataset description {path}: unknown key(s) {', '.join(unknown)}; the keys "
                        f"are: " + "; ".join(f"{k} ({v})" for k, v in DESCRIPTION_KEYS.items()))
    for key in ("name", "classes", "splits"):
        if key not in data:
            raise UserError(f"dataset description {path}: '{key}' is missing ({DESCRIPTION_KEYS[key]})")
    return data


def _pattern(path, key, value):
    if not isinstance(value, str) or value.count("{name}") != 1 or "/" in value or "\\" in value:
        raise UserError(f"dataset description {path}: {key} is {value!r}; expected a file name "
                        f"holding {{name}} once, e.g. \"{{name}}.png\" or \"rgb_{{name}}.png\"")
    return value.split("{name}")


def register_description(path: str) -> List[str]:
    """Register every split of the description file ``path`` as ``<name>_<split>`` (again if
    already registered, so that an edited file takes effect); returns the names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .common import register_semantic_dataset

    path = os.path.abspath(path)
    d = read_description(path)
    base = os.path.dirname(path)
    name, splits = d["name"], d["splits"]
    if not isinstance(name, str) or not name or any(c in name for c in " /\\"):
        raise UserError(f"dataset description {path}: name {name!r} must be a word (it prefixes "
                        f"the registered names)")
    if not isinstance(splits, dict) or not splits:
        raise UserError(f"dataset description {path}: splits must map split names to "
                        f"{{images: folder, labels: folder}}")
    image_pattern, label_pattern = d.get("image_pattern", "{name}.jpg"), d.get("label_pattern", "{name}.png")
    image_prefix, image_suffix = _pattern(path, "image_pattern", image_pattern)
    label_prefix, label_suffix = _pattern(path, "label_pattern", label_pattern)
    eval_size = d.get("eval_size")
    if eval_size is not None and not (isinstance(eval_size, list) and len(eval_size) == 2
                                      and all(isinstance(v, int) and v > 0 for v in eval_size)):
        raise UserError(f"dataset description {path}: eval_size is {eval_size!r}; expected [W, H]")
    converted_dir = d.get("converted_dir", ".rein_labels")
    if not isinstance(converted_dir, str) or not converted_dir:
        raise UserError(f"dataset description {path}: converted_dir is {converted_dir!r}; expected "
                        f"a folder (relative to the description file)")
    converted = os.path.join(base, converted_dir)
    names = []
    for split, spec in splits.items():
        if not (isinstance(spec, dict) and {"images", "labels"} <= set(spec)
                and set(spec) <= {"images", "labels", "domain"}
                and all(isinstance(spec[k], str) and spec[k] for k in ("images", "labels"))):
            raise UserError(f"dataset description {path}: split '{split}' is {spec!r}; expected "
                            f"{{images: folder, labels: folder}} (and optionally domain)")
        full = f"{name}_{split}"
        if full in DatasetCatalog.list():
            DatasetCatalog.remove(full)
            MetadataCatalog.remove(full)
        try:
            register_semantic_dataset(
                full, os.path.join(base, spec["images"]), os.path.join(base, spec["labels"]),
                image_suffix, label_suffix, eval_size=eval_size, domain=spec.get("domain", name),
                classes=d["classes"], colors=d.get("colors"), ignore_label=d.get("ignore_label", IGNORE_LABEL),
                label_format=d.get("label_format", "id"), ignore_colors=d.get("ignore_colors", ()),
                image_prefix=image_prefix, label_prefix=label_prefix,
                converted_dir=os.path.join(converted, split), description_file=path,
                layout=f"  {spec['images']}/{image_pattern}\n  {spec['labels']}/{label_pattern}",
                script=path)
        except UserError as e:
            raise UserError(f"dataset description {path}: {e}") from None
        names.append(full)
    return names


def _find(path: str, config_file: Optional[str]) -> str:
    if os.path.isfile(path) or os.path.isabs(path) or not config_file:
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(config_file)), path)
    return beside if os.path.isfile(beside) else path


def register_descriptions(paths: Sequence[str], config_file: Optional[str] = None) -> Dict[str, List[str]]:
    """register_description of each path (relative: to the current folder, else to the
    config file's); returns path -> registered names."""
    return {p: register_description(_find(p, config_file)) for p in paths}


def check_num_classes(cfg) -> None:
    """MODEL.SEM_SEG_HEAD.NUM_CLASSES must equal the class count of every dataset of the config
    that a description file registered."""
    from detectron2.data import MetadataCatalog

    for name in [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]:
        meta = MetadataCatalog.get(name)
        source = meta.get("description_file", None)
        if source and len(meta.stuff_classes) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise UserError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but {source} "
                f"names {len(meta.stuff_classes)} classes ({', '.join(meta.stuff_classes)}) for "
                f"'{name}': set MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(meta.stuff_classes)}")
