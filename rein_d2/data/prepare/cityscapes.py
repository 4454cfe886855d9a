"""Write Cityscapes *_gtFine_labelTrainIds.png next to each *_gtFine_labelIds.png (as
cityscapesscripts does) for the train and val splits. Resumable; registers as
`cityscapes_rein_train` and `cityscapes_rein_val`."""
import os
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import (
    check_count, convert_labels, find_files, require_dir)
from rein_d2.data.datasets.labels import (
    cityscapes_ids_to_trainids, check_images_if_asked, parse_prepare_args, run_prepare)

SRC, DST = "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for split in ("train", "val"):
        spec = DATASETS[f"cityscapes_rein_{split}"]
        src_dir = require_dir("cityscapes", os.path.join(args.root, "cityscapes", "gtFine", split),
                       spec["layout"], spec["script"])
        srcs = find_files(src_dir, SRC)
        pairs = [(s, s[: -len(SRC)] + DST) for s in srcs]
        done, skipped = convert_labels(pairs, cityscapes_ids_to_trainids, args.workers, desc=f"cityscapes {split}")
        print(f"cityscapes {split}: converted {done}, skipped {skipped} up to date")
        if not args.no_count_check:
            check_count(f"cityscapes_rein_{split}", len(srcs), spec["size"])
    check_images_if_asked(args, "cityscapes_rein_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
