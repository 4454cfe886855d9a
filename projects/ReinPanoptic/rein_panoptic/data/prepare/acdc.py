"""Convert ACDC's panoptic labels (acdc/gt_panoptic/<condition>/<split>/<seq>/*_gt_panoptic.png
and the condition's COCO panoptic json, whose category ids are Cityscapes label ids) to COCO
panoptic jsons + PNGs, train-id PNGs and COCO instances jsons over the 19 Cityscapes classes,
per condition and for all four together, in acdc/panoptic_cs19/. Resumable. Registers
acdc_panoptic_{fog,night,rain,snow}_{train,val} and acdc_panoptic_{train,val} (all four), and
acdc_instance_* likewise."""
import functools
import glob
import json
import os
import sys

from rein_d2.data.datasets.common import check_count, find_files, require_dir
from rein_panoptic.data.builtin import LAYOUTS, PREPARE_SCRIPT, ACDC_CONDITIONS, DATASETS
from rein_panoptic.data.convert import subset, write_json_atomic
from rein_panoptic.data.preparation import (
    check_images_if_asked, outputs, panoptic_item, parse_prepare_args, run_prepare, run_split)
from rein_panoptic.data.sources import cityscapes_category_map, coco_panoptic_segments

PANOPTIC_SUFFIX, IMAGE_SUFFIX = "_gt_panoptic.png", "_rgb_anon.png"


def find_json(gt_dir, cond, split):
    """The condition's panoptic json: <cond>_<split>_gt_panoptic.json in gt_panoptic/<cond>/,
    else the one json below gt_panoptic/<cond>/ whose name holds the condition, the split and
    "panoptic" (archives have been repacked under other names)."""
    exact = os.path.join(gt_dir, f"{cond}_{split}_gt_panoptic.json")
    if os.path.isfile(exact):
        return exact
    found = [p for p in glob.glob(os.path.join(gt_dir, "**", "*.json"), recursive=True)
             if all(w in os.path.basename(p) for w in (cond, split, "panoptic"))]
    if len(found) != 1:
        raise FileNotFoundError(
            f"Dataset 'acdc': {'no' if not found else 'more than one'} panoptic json for {cond} "
            f"{split} under {gt_dir} (looked for {os.path.basename(exact)}{'; found ' + ', '.join(found) if found else ''}).\n"
            f"Expected layout:\n{LAYOUTS['acdc']}")
    return found[0]


def condition_items(root, cond, split, first_id):
    gt_root = os.path.join(root, "acdc", "gt_panoptic")
    gt_dir = require_dir("acdc", os.path.join(gt_root, cond), LAYOUTS["acdc"], PREPARE_SCRIPT.format("acdc"))
    src_json = find_json(gt_dir, cond, split)
    with open(src_json) as f:
        data = json.load(f)
    categories = cityscapes_category_map(data["categories"], src_json)
    # Pair by file name, whatever folder prefix the json's file names carry.
    pngs = {os.path.basename(p): p for p in find_files(os.path.join(gt_dir, split), PANOPTIC_SUFFIX)}
    image_root = os.path.join(root, "acdc", "rgb_anon")
    images = {os.path.basename(p)[: -len(IMAGE_SUFFIX)]: p
              for p in find_files(os.path.join(image_root, cond, split), IMAGE_SUFFIX)}
    out = outputs(f"acdc_{cond}_{split}", root)
    items = []
    for ann in sorted(data["annotations"], key=lambda a: os.path.basename(a["file_name"])):
        name = os.path.basename(ann["file_name"])
        if name not in pngs:
            raise FileNotFoundError(f"{src_json}: lists {name}, which is not under {os.path.join(gt_dir, split)}: "
                                    f"extract gt_panoptic_trainval.zip again")
        stem = name[: -len(PANOPTIC_SUFFIX)]
        if stem not in images:
            raise FileNotFoundError(f"{pngs[name]}: its image {stem}{IMAGE_SUFFIX} is not under "
                                    f"{os.path.join(image_root, cond, split)}: extract rgb_anon_trainvaltest.zip")
        rel = os.path.relpath(pngs[name], gt_root)
        items.append(panoptic_item(out, first_id + len(items), os.path.relpath(images[stem], image_root), rel,
                                   [pngs[name], src_json],
                                   functools.partial(coco_panoptic_segments, pngs[name], ann["segments_info"], categories)))
    return items


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for split in ("train", "val"):
        per_condition = {}
        for cond in ACDC_CONDITIONS:  # image ids run on over the conditions: one id space per split
            first = 1 + sum(len(v) for v in per_condition.values())
            per_condition[cond] = condition_items(args.root, cond, split, first)
        items = [it for cond in ACDC_CONDITIONS for it in per_condition[cond]]
        _, _, panoptic, things = run_split(f"acdc_{split}", items, args.root, args.workers, not args.no_count_check)
        for cond, cond_items in per_condition.items():
            key, ids = f"acdc_{cond}_{split}", [it["image_id"] for it in cond_items]
            out = outputs(key, args.root)
            write_json_atomic(out["panoptic_json"], subset(panoptic, ids))
            write_json_atomic(out["instances_json"], subset(things, ids))
            if not args.no_count_check:
                check_count(key, len(ids), DATASETS[key]["size"])
    check_images_if_asked(args, "acdc", [(f"acdc_panoptic_{c}_{s}", f"acdc/rgb_anon/{c}/{s}", IMAGE_SUFFIX)
                                         for c in ACDC_CONDITIONS for s in ("train", "val")])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
