#!/usr/bin/env python
"""Convert BDD100K panoptic bitmasks (bdd100k/labels/pan_seg/bitmasks/{train,val}/*.png: RGBA, R =
category 0..40, G = attributes, B * 256 + A = instance id) to a COCO panoptic json + PNGs,
train-id PNGs and a COCO instances json over the 19 Cityscapes classes, in
bdd100k/panoptic_cs19/ (projects/ReinPanoptic/DATASETS.md). The program is
rein_panoptic/data/prepare/bdd100k.py (`python -m rein_panoptic.data.prepare.bdd100k` runs it
too); --help for the options."""
import sys

from rein_panoptic.data.preparation import run_prepare
from rein_panoptic.data.prepare.bdd100k import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
