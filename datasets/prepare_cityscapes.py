#!/usr/bin/env python
"""Write Cityscapes *_gtFine_labelTrainIds.png next to each *_gtFine_labelIds.png (as
cityscapesscripts does) for the train and val splits. The program is
rein_d2/data/prepare/cityscapes.py (`python -m rein_d2.data.prepare.cityscapes` runs it too);
--help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.cityscapes import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
