#!/usr/bin/env python
"""Convert GTAV labels (palette PNGs of Cityscapes label ids) to train-id PNGs: gta/labels/*.png ->
gta/labels_trainid/*.png. The program is rein_d2/data/prepare/gtav.py (`python -m
rein_d2.data.prepare.gtav` runs it too); --help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.gtav import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
