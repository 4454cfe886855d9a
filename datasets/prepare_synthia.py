"""Convert SYNTHIA RAND-CITYSCAPES labels (16-bit 3-channel PNGs, class id in the red channel)
to train-id PNGs: synthia/GT/LABELS/*.png -> synthia/GT/LABELS_trainid/*.png. Resumable;
registers as `synthia_train`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rein_d2.data.datasets.builtin import DATASETS  # noqa: E402
from rein_d2.data.datasets.common import check_count, convert_labels, find_files, require_dir  # noqa: E402
from rein_d2.data.datasets.labels import parse_prepare_args, synthia_to_trainids  # noqa: E402


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    spec = DATASETS["synthia_train"]
    src_dir = require_dir("synthia", os.path.join(args.root, "synthia", "GT", "LABELS"),
                          spec["layout"], spec["script"])
    dst_dir = os.path.join(args.root, "synthia", "GT", "LABELS_trainid")
    srcs = find_files(src_dir, ".png")
    pairs = [(s, os.path.join(dst_dir, os.path.relpath(s, src_dir))) for s in srcs]
    done, skipped = convert_labels(pairs, synthia_to_trainids, args.workers, desc="synthia")
    print(f"synthia: converted {done}, skipped {skipped} existing")
    if not args.no_count_check:
        check_count("synthia_train", len(srcs), spec["size"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
