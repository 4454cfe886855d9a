"""Convert SYNTHIA RAND-CITYSCAPES labels (16-bit 3-channel PNGs, class id in the red channel)
to train-id PNGs: synthia/GT/LABELS/*.png -> synthia/GT/LABELS_trainid/*.png. Resumable;
registers as `synthia_train`."""
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import convert_folder
from rein_d2.data.datasets.labels import (
    check_images_if_asked, parse_prepare_args, run_prepare, synthia_to_trainids)


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    convert_folder("synthia_train", args.root, "synthia/GT/LABELS",
                   "synthia/GT/LABELS_trainid", synthia_to_trainids, args.workers,
                   DATASETS["synthia_train"], not args.no_count_check)
    check_images_if_asked(args, "synthia_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
