"""Map Mapillary Vistas v1.2 labels (label index per pixel, 66 labels named in
config_v1.2.json) to the 19 Cityscapes train ids by readable name (datasets/README.md):
mapillary/{training,validation}/v1.2/labels/*.png -> .../v1.2/labels_trainid/*.png; then halve
the validation images and labels as the reference does (mapillary/validation/half/).
The older v1.x archives (config.json, <split>/labels/) are read too. Resumable; registers
`mapillary_train`, `mapillary_val` (the reference's halved protocol) and `mapillary_val_full`."""
import functools
import os
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import (
    check_count, convert_folder, find_files, require_dir)
from rein_d2.data.datasets.labels import (
    mapillary_lut, mapillary_to_trainids, check_images_if_asked, parse_prepare_args, run_prepare)
from rein_d2.data.datasets.mapillary import find_layout, halve_validation


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    spec = DATASETS["mapillary_train"]
    mapillary = require_dir("mapillary", os.path.join(args.root, "mapillary"), spec["layout"], spec["script"])
    found = find_layout(mapillary)
    if found is None:
        raise FileNotFoundError(
            f"Dataset 'mapillary': no label list and label folder found under {mapillary}: looked "
            f"for config_v1.2.json with validation/v1.2/labels/ (v2.0 download) and config.json "
            f"with validation/labels/ (v1.x download).\nrein_d2 looks for datasets under the "
            f"environment variable DETECTRON2_DATASETS (now {args.root!r}).\nExpected layout:\n"
            f"{spec['layout']}")
    config, labels = found
    print(f"mapillary: label list {config}, raw labels in <split>/{labels}/")
    fn = functools.partial(mapillary_to_trainids, lut=mapillary_lut(config))
    for name, folder in (("mapillary_train", "training"), ("mapillary_val_full", "validation")):
        convert_folder(name, args.root, f"mapillary/{folder}/{labels}", DATASETS[name]["label_dir"],
                       fn, args.workers, DATASETS[name], not args.no_count_check)
    full, half = DATASETS["mapillary_val_full"], DATASETS["mapillary_val"]
    images, written = halve_validation(args.root, full["image_dir"], full["label_dir"], args.workers)
    print(f"mapillary val halved (the reference's protocol): {images} image(s) and {written} "
          f"label(s) written, the rest up to date")
    if not args.no_count_check:
        check_count("mapillary_val", len(find_files(os.path.join(args.root, half["label_dir"]), ".png")),
                    half["size"])
    check_images_if_asked(args, "mapillary_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
