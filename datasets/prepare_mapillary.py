"""Map Mapillary Vistas v1.2 labels (label index per pixel, 66 labels named in
config_v1.2.json) to the 19 Cityscapes train ids by readable name (REIN_SPEC section 6):
mapillary/{training,validation}/v1.2/labels/*.png -> .../v1.2/labels_trainid/*.png.
Resumable; registers `mapillary_{train,val}`."""
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rein_d2.data.datasets.builtin import DATASETS  # noqa: E402
from rein_d2.data.datasets.common import check_count, convert_labels, find_files, require_dir  # noqa: E402
from rein_d2.data.datasets.labels import mapillary_lut, mapillary_to_trainids, parse_prepare_args  # noqa: E402


def main(argv=None):
    args = parse_prepare_args(__doc__, argv)
    config = os.path.join(args.root, "mapillary", "config_v1.2.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"Mapillary Vistas label list not found: {config} "
                                f"(it ships with the v1.2 download; see datasets/README.md)")
    fn = functools.partial(mapillary_to_trainids, lut=mapillary_lut(config))
    for split, folder in (("train", "training"), ("val", "validation")):
        spec = DATASETS[f"mapillary_{split}"]
        src_dir = require_dir("mapillary", os.path.join(args.root, "mapillary", folder, "v1.2", "labels"),
                              spec["layout"], spec["script"])
        dst_dir = os.path.join(args.root, spec["label_dir"])
        srcs = find_files(src_dir, ".png")
        pairs = [(s, os.path.join(dst_dir, os.path.relpath(s, src_dir))) for s in srcs]
        done, skipped = convert_labels(pairs, fn, args.workers, desc=f"mapillary {split}")
        print(f"mapillary {split}: converted {done}, skipped {skipped} existing")
        if not args.no_count_check:
            check_count(f"mapillary_{split}", len(srcs), spec["size"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
