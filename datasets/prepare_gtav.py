"""Convert GTAV labels (palette PNGs of Cityscapes label ids) to train-id PNGs:
gta/labels/*.png -> gta/labels_trainid/*.png. Resumable; registers as `gtav_train`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rein_d2.data.datasets.builtin import DATASETS  # noqa: E402
from rein_d2.data.datasets.common import check_count, convert_labels, find_files, require_dir  # noqa: E402
from rein_d2.data.datasets.labels import gtav_ids_to_trainids, parse_prepare_args  # noqa: E402


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    spec = DATASETS["gtav_train"]
    src_dir = require_dir("gtav", os.path.join(args.root, "gta", "labels"), spec["layout"], spec["script"])
    dst_dir = os.path.join(args.root, "gta", "labels_trainid")
    srcs = find_files(src_dir, ".png")
    pairs = [(s, os.path.join(dst_dir, os.path.relpath(s, src_dir))) for s in srcs]
    done, skipped = convert_labels(pairs, gtav_ids_to_trainids, args.workers, desc="gtav")
    print(f"gtav: converted {done}, skipped {skipped} existing")
    if not args.no_count_check:
        check_count("gtav_train", len(srcs), spec["size"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
