#!/usr/bin/env python
"""ACDC ships *_gt_labelTrainIds.png: check every one holds only 0..18 and 255 (an error names the
file) and the split sizes. The program is rein_d2/data/prepare/acdc.py (`python -m
rein_d2.data.prepare.acdc` runs it too); --help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.acdc import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
