"""Convert GTAV labels (palette PNGs of Cityscapes label ids) to train-id PNGs:
gta/labels/*.png -> gta/labels_trainid/*.png. Resumable; registers as `gtav_train`."""
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import convert_folder
from rein_d2.data.datasets.labels import (
    gtav_ids_to_trainids, check_images_if_asked, parse_prepare_args, run_prepare)


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    convert_folder("gtav_train", args.root, "gta/labels", "gta/labels_trainid",
                   gtav_ids_to_trainids, args.workers, DATASETS["gtav_train"],
                   not args.no_count_check)
    check_images_if_asked(args, "gtav_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
