"""BDD100K semantic masks already hold train ids: check every mask holds only 0..18 and 255
(an error names the file) and the split sizes. Registers `bdd100k_sem_seg_{train,val}`."""
import os
import sys

from rein_d2.data.datasets.builtin import DATASETS
from rein_d2.data.datasets.common import (
    check_count, check_labels, check_train_ids, find_files, require_dir)
from rein_d2.data.datasets.labels import (
    check_images_if_asked, parse_prepare_args, run_prepare)


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    for split in ("train", "val"):
        spec = DATASETS[f"bdd100k_sem_seg_{split}"]
        src_dir = require_dir("bdd100k", os.path.join(args.root, spec["label_dir"]), spec["layout"], spec["script"])
        files = find_files(src_dir, ".png")
        check_labels(files, check_train_ids, args.workers, desc=f"bdd100k {split}")
        print(f"bdd100k {split}: {len(files)} masks checked")
        if not args.no_count_check:
            check_count(f"bdd100k_sem_seg_{split}", len(files), spec["size"])
    check_images_if_asked(args, "bdd100k_sem_seg_")
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
