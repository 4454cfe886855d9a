#!/usr/bin/env python
"""Convert SYNTHIA RAND-CITYSCAPES labels (16-bit 3-channel PNGs, class id in the red channel) to
train-id PNGs: synthia/GT/LABELS/*.png -> synthia/GT/LABELS_trainid/*.png. The program is
rein_d2/data/prepare/synthia.py (`python -m rein_d2.data.prepare.synthia` runs it too); --help
for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.synthia import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
