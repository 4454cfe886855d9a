#!/usr/bin/env python
"""Convert UrbanSyn's semantic labels to train-id PNGs: urbansyn/ss/ss_<NNNN>.png (train ids, 19 =
unlabelled) -> urbansyn/ss_trainid/ss_<NNNN>.png (unlabelled = 255). The program is
rein_d2/data/prepare/urbansyn.py (`python -m rein_d2.data.prepare.urbansyn` runs it too); --help
for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.urbansyn import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
