#!/usr/bin/env python
"""Train and evaluate Rein for panoptic or instance segmentation under domain shift. The program
is rein_panoptic/tools/train_net.py (`python -m rein_panoptic.tools.train_net` runs it too);
--help for the options."""
from rein_d2.tools.train_net import run
from rein_panoptic.tools.train_net import main

if __name__ == "__main__":
    run(main)
