#!/usr/bin/env python
"""Train or evaluate a Rein detector (Mask R-CNN / Cascade Mask R-CNN). The program is
rein_det/tools/train_net.py (`python -m rein_det.tools.train_net` runs it too); --help for the
options."""
from rein_d2.tools.train_net import run
from rein_det.tools.train_net import main

if __name__ == "__main__":
    run(main)
