#!/usr/bin/env python
"""Export a trained Rein model as one full MODEL.WEIGHTS file, or extract its light file.
The program is rein_d2/tools/export_checkpoint.py (`python -m rein_d2.tools.export_checkpoint` runs
it too); --help for the options."""
import sys

from rein_d2.tools.export_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
