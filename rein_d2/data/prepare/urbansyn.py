"""Convert UrbanSyn's semantic labels to train-id PNGs: urbansyn/ss/ss_<NNNN>.png (train ids,
19 = unlabelled) -> urbansyn/ss_trainid/ss_<NNNN>.png (unlabelled = 255). Resumable; registers
as `urbansyn_train` (every frame, with urbansyn/rgb/rgb_<NNNN>.png)."""
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import convert_folder
from rein_d2.data.datasets.labels import (
    check_images_if_asked, parse_prepare_args, run_prepare, urbansyn_to_trainids)


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    convert_folder("urbansyn_train", args.root, "urbansyn/ss", "urbansyn/ss_trainid",
                   urbansyn_to_trainids, args.workers, DATASETS["urbansyn_train"], not args.no_count_check)
    check_images_if_asked(args, "urbansyn_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
