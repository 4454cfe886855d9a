"""Convert Mapillary Vistas v1.2 panoptic labels (<split>/v1.2/panoptic/ of the v2.0 download,
or <split>/panoptic/ of a v1.x download: COCO panoptic PNGs + panoptic_2018.json) to a COCO
panoptic json + PNGs, train-id PNGs and a COCO instances json over the 19 Cityscapes classes,
in mapillary/panoptic_cs19/. Classes map by readable name, as rein_d2's semantic Mapillary
does; validation stays at full resolution (projects/ReinPanoptic/DATASETS.md). Resumable.
Registers mapillary_panoptic_{train,val} and mapillary_instance_{train,val}."""
import functools
import json
import os
import sys

from rein_d2.data.datasets.common import require_dir
from rein_panoptic.data.builtin import LAYOUTS, PREPARE_SCRIPT, DATASETS
from rein_panoptic.data.preparation import (
    check_images_if_asked, outputs, panoptic_item, parse_prepare_args, run_prepare, run_split)
from rein_panoptic.data.sources import coco_panoptic_segments, mapillary_category_map

# Where v1.2's panoptic labels are, below <split>/: the v2.0 download, then a v1.x download.
PANOPTIC_DIRS = ("v1.2/panoptic", "panoptic")
PANOPTIC_JSON = "panoptic_2018.json"


def find_panoptic(split_dir):
    for rel in PANOPTIC_DIRS:
        folder = os.path.join(split_dir, rel)
        if os.path.isfile(os.path.join(folder, PANOPTIC_JSON)):
            return folder
    raise FileNotFoundError(
        f"Dataset 'mapillary': no {PANOPTIC_JSON} under {split_dir}: looked in "
        f"{', '.join(os.path.join(split_dir, r) for r in PANOPTIC_DIRS)} (v2.0 and v1.x downloads).\n"
        f"Expected layout:\n{LAYOUTS['mapillary']}")


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:  # cut short
        raise ValueError(f"{path}: not a readable json ({e}): download it again") from e


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for split, folder in (("train", "training"), ("val", "validation")):
        key = f"mapillary_{split}"
        out = outputs(key, args.root)
        split_dir = require_dir("mapillary", os.path.join(args.root, DATASETS[key]["raw"]),
                                LAYOUTS["mapillary"], PREPARE_SCRIPT.format("mapillary"))
        panoptic = find_panoptic(split_dir)
        src_json = os.path.join(panoptic, PANOPTIC_JSON)
        data = load_json(src_json)
        print(f"mapillary {split}: panoptic labels in {panoptic}")
        categories = mapillary_category_map(data["categories"], src_json)
        images = {i["id"]: i["file_name"] for i in data["images"]}
        items = []
        for ann in sorted(data["annotations"], key=lambda a: a["file_name"]):
            png = os.path.join(panoptic, ann["file_name"])
            image = images.get(ann["image_id"])
            if image is None or not os.path.isfile(os.path.join(out["image_root"], image)):
                raise FileNotFoundError(f"{png}: its image ({image or 'no entry in ' + src_json}) is not in "
                                        f"{out['image_root']}: download the {folder} images")
            if not os.path.isfile(png):
                raise FileNotFoundError(f"{png}: listed in {src_json} but missing: download the panoptic labels again")
            items.append(panoptic_item(out, len(items) + 1, image, ann["file_name"], [png, src_json],
                                       functools.partial(coco_panoptic_segments, png, ann["segments_info"], categories)))
        run_split(key, items, args.root, args.workers, not args.no_count_check)
    check_images_if_asked(args, "mapillary", [(f"mapillary_panoptic_{s}", f"mapillary/{f}/images", ".jpg")
                                              for s, f in (("train", "training"), ("val", "validation"))])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
