#!/usr/bin/env python
"""Convert SYNTHIA RAND-CITYSCAPES labels (synthia/GT/LABELS/*.png: 16-bit, class id in the first
channel, instance id in the second) to a COCO panoptic json + PNGs, train-id PNGs and a COCO
instances json over the 19 Cityscapes classes (16 occur: SYNTHIA has no terrain, truck or
train), in synthia/panoptic_cs19/. The program is rein_panoptic/data/prepare/synthia.py (`python
-m rein_panoptic.data.prepare.synthia` runs it too); --help for the options."""
import sys

from rein_panoptic.data.preparation import run_prepare
from rein_panoptic.data.prepare.synthia import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
