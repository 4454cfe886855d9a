#!/usr/bin/env python
"""Map Mapillary Vistas v1.2 labels (label index per pixel, 66 labels named in config_v1.2.json) to
the 19 Cityscapes train ids by readable name (datasets/README.md):
mapillary/{training,validation}/v1.2/labels/*.png -> .../v1.2/labels_trainid/*.png; then halve
the validation images and labels as the reference does (mapillary/validation/half/). The program
is rein_d2/data/prepare/mapillary.py (`python -m rein_d2.data.prepare.mapillary` runs it too);
--help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.mapillary import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
