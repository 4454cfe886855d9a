#!/usr/bin/env python
"""Prepare Cityscapes fine for detectron2's cityscapes_fine_panoptic_{train,val}: run
cityscapesscripts' createPanopticImgs (gtFine/cityscapes_panoptic_<split>.json and
gtFine/cityscapes_panoptic_<split>/, from the *_gtFine_instanceIds.png), write the
*_gtFine_labelTrainIds.png detectron2's loader also reads (as datasets/prepare_cityscapes.py
does), and the COCO instances json of the things, gtFine/cityscapes_instances_<split>.json, for
cityscapes_instance_{train,val}. The program is rein_panoptic/data/prepare/cityscapes.py
(`python -m rein_panoptic.data.prepare.cityscapes` runs it too); --help for the options."""
import sys

from rein_panoptic.data.preparation import run_prepare
from rein_panoptic.data.prepare.cityscapes import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
