"""Map Mapillary Vistas v1.2 labels (label index per pixel, 66 labels named in
config_v1.2.json) to the 19 Cityscapes train ids by readable name (REIN_SPEC section 6):
mapillary/{training,validation}/v1.2/labels/*.png -> .../v1.2/labels_trainid/*.png.
Resumable; registers `mapillary_{train,val}`."""
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rein_d2.data.datasets.builtin import DATASETS  # noqa: E402
from rein_d2.data.datasets.common import convert_folder  # noqa: E402
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
        convert_folder(f"mapillary_{split}", args.root, f"mapillary/{folder}/v1.2/labels",
                       spec["label_dir"], fn, args.workers, spec, not args.no_count_check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
