#!/usr/bin/env python
"""Train or evaluate a Rein model (detectron2's train_net, with the reference's recipe).
The program is rein_d2/tools/train_net.py (`python -m rein_d2.tools.train_net` runs it too); --help
for the options."""
from rein_d2.tools.train_net import run

if __name__ == "__main__":
    run()
