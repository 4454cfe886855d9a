"""Convert SYNTHIA RAND-CITYSCAPES labels (synthia/GT/LABELS/*.png: 16-bit, class id in the
first channel, instance id in the second) to a COCO panoptic json + PNGs, train-id PNGs and a
COCO instances json over the 19 Cityscapes classes (16 occur: SYNTHIA has no terrain, truck or
train), in synthia/panoptic_cs19/. Resumable. Registers synthia_panoptic_train and
synthia_instance_train (all 9,400 frames, as rein_d2's synthia_train)."""
import functools
import os
import sys

from rein_d2.data.datasets.common import REFERENCE_OUTPUT_SUFFIX, find_files, require_dir
from rein_panoptic.data.builtin import LAYOUTS, PREPARE_SCRIPT, DATASETS
from rein_panoptic.data.preparation import (
    check_images_if_asked, outputs, panoptic_item, parse_prepare_args, run_prepare, run_split)
from rein_panoptic.data.sources import synthia_segments


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    key = "synthia_train"
    out = outputs(key, args.root)
    labels = require_dir("synthia", os.path.join(args.root, DATASETS[key]["raw"]), LAYOUTS["synthia"],
                         PREPARE_SCRIPT.format("synthia"))
    items = []
    # *_labelTrainIds.png beside the raw labels are the reference converter's outputs, not labels.
    for png in (f for f in find_files(labels, ".png") if not f.endswith(REFERENCE_OUTPUT_SUFFIX)):
        rel = os.path.relpath(png, labels)
        if not os.path.isfile(os.path.join(out["image_root"], rel)):
            raise FileNotFoundError(f"{png}: its image {os.path.join(out['image_root'], rel)} is missing: "
                                    f"download SYNTHIA RAND-CITYSCAPES' RGB folder")
        items.append(panoptic_item(out, len(items) + 1, rel, rel, [png], functools.partial(synthia_segments, png)))
    run_split(key, items, args.root, args.workers, not args.no_count_check)
    check_images_if_asked(args, "synthia", [("synthia_panoptic_train", "synthia/RGB", ".png")])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
