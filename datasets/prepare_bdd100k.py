#!/usr/bin/env python
"""BDD100K semantic masks already hold train ids: check every mask holds only 0..18 and 255 (an
error names the file) and the split sizes. The program is rein_d2/data/prepare/bdd100k.py
(`python -m rein_d2.data.prepare.bdd100k` runs it too); --help for the options."""
import sys

from rein_d2.data.datasets.labels import run_prepare
from rein_d2.data.prepare.bdd100k import main

if __name__ == "__main__":
    sys.exit(run_prepare(main))
