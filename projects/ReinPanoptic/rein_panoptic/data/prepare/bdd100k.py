"""Convert BDD100K panoptic bitmasks (bdd100k/labels/pan_seg/bitmasks/{train,val}/*.png: RGBA,
R = category 0..40, G = attributes, B * 256 + A = instance id) to a COCO panoptic json + PNGs,
train-id PNGs and a COCO instances json over the 19 Cityscapes classes, in
bdd100k/panoptic_cs19/ (projects/ReinPanoptic/DATASETS.md). Resumable. Registers
bdd100k_panoptic_{train,val} and bdd100k_instance_{train,val}."""
import functools
import os
import sys

from rein_d2.data.datasets.common import find_files, require_dir
from rein_panoptic.data.builtin import LAYOUTS, PREPARE_SCRIPT, DATASETS
from rein_panoptic.data.preparation import (
    check_images_if_asked, outputs, panoptic_item, parse_prepare_args, run_prepare, run_split)
from rein_panoptic.data.sources import bdd100k_segments


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for split in ("train", "val"):
        key = f"bdd100k_{split}"
        out = outputs(key, args.root)
        masks = require_dir("bdd100k", os.path.join(args.root, DATASETS[key]["raw"]), LAYOUTS["bdd100k"],
                            PREPARE_SCRIPT.format("bdd100k"))
        items = []
        for png in find_files(masks, ".png"):
            rel = os.path.relpath(png, masks)
            image = os.path.splitext(rel)[0] + ".jpg"
            if not os.path.isfile(os.path.join(out["image_root"], image)):
                raise FileNotFoundError(f"{png}: its image {os.path.join(out['image_root'], image)} is "
                                        f"missing: download the 10K images (bdd100k/images/10k/{split}/)")
            items.append(panoptic_item(out, len(items) + 1, image, rel, [png],
                                       functools.partial(bdd100k_segments, png)))
        run_split(key, items, args.root, args.workers, not args.no_count_check)
    check_images_if_asked(args, "bdd100k", [(f"bdd100k_panoptic_{s}", f"bdd100k/images/10k/{s}", ".jpg")
                                            for s in ("train", "val")])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
