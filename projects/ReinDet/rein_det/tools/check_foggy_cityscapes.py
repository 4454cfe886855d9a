"""Check a Foggy Cityscapes download: every Cityscapes frame of train and val has its foggy
image at each beta (0.02, 0.01, 0.005) and its gtFine annotations, and the splits have the
official sizes (2975 and 500 frames). Nothing is converted: the detectors read the files as
they are. Registers `foggy_cityscapes_{0.02,0.01,0.005}_instance_{train,val}`."""
import argparse
import os
import sys

from detectron2.data import DatasetCatalog

from rein_d2.data.datasets.common import check_count, datasets_root
from rein_d2.data.datasets.labels import run_prepare
from rein_det.foggy_cityscapes import FOGGY_BETAS, SPLITS

SIZES = {"train": 2975, "val": 500}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--no-count-check", action="store_true", help="skip the split-size check (partial downloads)")
    args = p.parse_args(argv)
    os.environ["DETECTRON2_DATASETS"] = args.root or datasets_root()  # the loaders read it
    for split in SPLITS:
        for beta in FOGGY_BETAS:
            name = f"foggy_cityscapes_{beta}_instance_{split}"
            records = DatasetCatalog.get(name)
            instances = sum(len(r["annotations"]) for r in records)
            print(f"{name}: {len(records)} images, {instances} annotations (crowd regions included)")
            if not args.no_count_check:
                check_count(name, len(records), SIZES[split])
    return 0


if __name__ == "__main__":
    sys.exit(run_prepare(main))
