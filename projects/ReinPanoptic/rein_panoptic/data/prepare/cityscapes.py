"""Prepare Cityscapes fine for detectron2's cityscapes_fine_panoptic_{train,val}: run
cityscapesscripts' createPanopticImgs (gtFine/cityscapes_panoptic_<split>.json and
gtFine/cityscapes_panoptic_<split>/, from the *_gtFine_instanceIds.png), write the
*_gtFine_labelTrainIds.png detectron2's loader also reads (as datasets/prepare_cityscapes.py
does), and the COCO instances json of the things, gtFine/cityscapes_instances_<split>.json,
for cityscapes_instance_{train,val}. Resumable: a split's panoptic files are made again only
when an instanceIds file is newer than its json."""
import os
import shutil
import sys

from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

from rein_d2.data.datasets.common import check_count, convert_labels, find_files, require_dir
from rein_d2.data.datasets.labels import cityscapes_ids_to_trainids
from rein_panoptic.data.builtin import LAYOUTS, PREPARE_SCRIPT, DATASETS
from rein_panoptic.data.convert import convert_split, fresh
from rein_panoptic.data.preparation import check_images_if_asked, parse_prepare_args, run_prepare

INSTANCE_IDS, LABEL_IDS, TRAIN_IDS = "_gtFine_instanceIds.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"


def panoptic_split(gt, split, sources):
    """cityscapesscripts' conversion of one split, into a temporary folder first, then moved
    into place (the json last), so that an interrupted run leaves no json over partial PNGs."""
    base = f"cityscapes_panoptic_{split}"
    json_file, folder = os.path.join(gt, base + ".json"), os.path.join(gt, base)
    if os.path.isdir(folder) and fresh(json_file, *sources):
        print(f"cityscapes {split}: {json_file} up to date")
        return json_file, folder
    tmp = os.path.join(gt, f".{base}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    convert2panoptic(cityscapesPath=gt, outputFolder=tmp, setNames=[split])
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(os.path.join(tmp, base), folder)
    os.replace(os.path.join(tmp, base + ".json"), json_file)
    shutil.rmtree(tmp)
    return json_file, folder


def main(argv=None):
    import json

    args = parse_prepare_args(__doc__, argv)
    gt = os.path.join(args.root, "cityscapes", "gtFine")
    for split in ("train", "val"):
        spec = DATASETS[f"cityscapes_{split}"]
        split_dir = require_dir("cityscapes", os.path.join(args.root, spec["raw"]), LAYOUTS["cityscapes"],
                                PREPARE_SCRIPT.format("cityscapes"))
        sources = find_files(split_dir, INSTANCE_IDS)
        if not sources:  # cityscapesscripts would exit the process instead
            raise FileNotFoundError(f"Dataset 'cityscapes': no *{INSTANCE_IDS} under {split_dir}: extract "
                                    f"gtFine_trainvaltest.zip there.\nExpected layout:\n{LAYOUTS['cityscapes']}")
        json_file, folder = panoptic_split(gt, split, sources)
        labels = find_files(split_dir, LABEL_IDS)
        done, kept = convert_labels([(s, s[: -len(LABEL_IDS)] + TRAIN_IDS) for s in labels],
                                    cityscapes_ids_to_trainids, args.workers, desc=f"cityscapes {split} train ids")
        print(f"cityscapes {split}: train ids: converted {done}, kept {kept} up to date")
        # The instances json, read off cityscapesscripts' panoptic PNGs (the same id convention).
        with open(json_file) as f:
            annotations = json.load(f)["annotations"]
        items = [dict(image_id=i, reader=None, srcs=[], sem_dst=None, pan_file=a["file_name"],
                      pan_dst=os.path.join(folder, a["file_name"]),
                      file_name=os.path.join(a["image_id"].split("_")[0], a["image_id"] + "_leftImg8bit.png"))
                 for i, a in enumerate(annotations, 1)]
        convert_split(items, None, os.path.join(args.root, spec["instances_json"]), args.workers,
                      desc=f"cityscapes {split} instances")
        if not args.no_count_check:
            check_count(f"cityscapes_{split}", len(sources), spec["size"])
    check_images_if_asked(args, "cityscapes", [(f"cityscapes_{s}", f"cityscapes/leftImg8bit/{s}", "_leftImg8bit.png")
                                               for s in ("train", "val")])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
