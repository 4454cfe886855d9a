#!/usr/bin/env python
"""Convert Mapillary Vistas v1.2 panoptic labels (<split>/v1.2/panoptic/ of the v2.0 download, or
<split>/panoptic/ of a v1.x download: COCO panoptic PNGs + panoptic_2018.json) to a COCO
panoptic json + PNGs, train-id PNGs and a COCO instances json over the 19 Cityscapes classes, in
mapillary/panoptic_cs19/. The program is rein_panoptic/data/prepare/mapillary.py (`python -m
rein_panoptic.data.prepare.mapillary` runs it too); --help for the options."""
import sys

from rein_panoptic.data.preparation import run_prepare
from rein_panoptic.data.prepare.mapillary import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
