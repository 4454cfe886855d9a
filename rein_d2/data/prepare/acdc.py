"""ACDC ships *_gt_labelTrainIds.png: check every one holds only 0..18 and 255 (an error names
the file) and the split sizes. Registers `acdc_<fog|night|rain|snow>_{train,val}`."""
import os
import sys

from rein_d2.data.datasets.builtin import ACDC_SIZES, DATASETS
from rein_d2.data.datasets.common import (
    check_count, check_labels, check_train_ids, find_files, require_dir)
from rein_d2.data.datasets.labels import (
    check_images_if_asked, parse_prepare_args, run_prepare)


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for cond in ACDC_SIZES:
        for split in ("train", "val"):
            name = f"acdc_{cond}_{split}"
            spec = DATASETS[name]
            src_dir = require_dir("acdc", os.path.join(args.root, spec["label_dir"]), spec["layout"], spec["script"])
            files = find_files(src_dir, spec["label_suffix"])
            check_labels(files, check_train_ids, args.workers, desc=name)
            print(f"{name}: {len(files)} labels checked")
            if not args.no_count_check:
                check_count(name, len(files), spec["size"])
    check_images_if_asked(args, "acdc_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
