#!/usr/bin/env python
"""Check a Foggy Cityscapes download (every frame at each beta, the official split sizes). The
program is rein_det/tools/check_foggy_cityscapes.py (`python -m
rein_det.tools.check_foggy_cityscapes` runs it too); --help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_det.tools.check_foggy_cityscapes import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
