#!/usr/bin/env python
"""Convert ACDC's panoptic labels (acdc/gt_panoptic/<condition>/<split>/<seq>/*_gt_panoptic.png and
the condition's COCO panoptic json, whose category ids are Cityscapes label ids) to COCO
panoptic jsons + PNGs, train-id PNGs and COCO instances jsons over the 19 Cityscapes classes,
per condition and for all four together, in acdc/panoptic_cs19/. The program is
rein_panoptic/data/prepare/acdc.py (`python -m rein_panoptic.data.prepare.acdc` runs it too);
--help for the options."""
import sys

from rein_panoptic.data.preparation import run_prepare
from rein_panoptic.data.prepare.acdc import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
