"""What the ``prepare/prepare_<dataset>_panoptic.py`` scripts share: rein_d2's command line
(--root, --workers, --no-count-check, --check-images), the split's output paths and the run
of one split through ``convert.convert_split``."""
import os

from rein_d2.data.datasets.common import check_all_images, check_count
from rein_d2.data.datasets.labels import parse_prepare_args, run_prepare

from .builtin import LAYOUTS, PREPARE_SCRIPT, DATASETS, OUT
from .convert import convert_split

__all__ = ["parse_prepare_args", "run_prepare", "outputs", "run_split", "check_images_if_asked",
           "panoptic_item"]


def outputs(key, root):
    """Absolute output paths of split ``key`` (a key of builtin.DATASETS)."""
    spec = DATASETS[key]
    return {k: os.path.join(root, spec[k]) for k in ("image_root", "panoptic_root", "sem_seg_root",
                                                      "panoptic_json", "instances_json") if k in spec}


def panoptic_item(out, image_id, file_name, pan_file, srcs, reader) -> dict:
    """One image of a split for convert_split: its panoptic PNG and train-id PNG are written
    under the split's output folders (``outputs``) at the panoptic file's relative path."""
    return dict(image_id=image_id, file_name=file_name, pan_file=pan_file, srcs=srcs, reader=reader,
                pan_dst=os.path.join(out["panoptic_root"], pan_file),
                sem_dst=os.path.join(out["sem_seg_root"], pan_file))


def run_split(key, items, root, workers, count_check, panoptic_json=None, instances_json=None):
    """Convert one split's items, write its jsons and check its size; returns convert_split's."""
    out = outputs(key, root)
    result = convert_split(items, panoptic_json or out["panoptic_json"],
                           instances_json or out["instances_json"], workers, desc=key.replace("_", " "))
    print(f"{key.replace('_', ' ')}: converted {result[0]}, kept {result[1]} up to date; "
          f"{len(items)} images in {panoptic_json or out['panoptic_json']}")
    if count_check:
        check_count(key, len(items), DATASETS[key]["size"])
    return result


def check_images_if_asked(args, dataset, image_dirs):
    """With --check-images: decode every image of the given (name, image dir, suffix) splits
    (rein_d2's resumable check; its records go in <dataset>/panoptic_cs19/checked_images/)."""
    if not args.check_images:
        return
    # One record per split: image paths are recorded relative to the split's image folder.
    specs = {name: dict(image_dir=image_dir, image_suffix=suffix, label_dir=f"{dataset}/{OUT}/checked_images/{name}",
                        layout=LAYOUTS[dataset], script=PREPARE_SCRIPT.format(dataset))
             for name, image_dir, suffix in image_dirs}
    check_all_images(args.root, specs, args.workers)
