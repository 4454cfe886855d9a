#!/usr/bin/env python
"""Convert a reference Rein release checkpoint into a rein_d2 checkpoint.
The program is rein_d2/tools/convert_rein_checkpoint.py (`python -m
rein_d2.tools.convert_rein_checkpoint` runs it too); --help for the options."""
import sys

from rein_d2.tools.convert_rein_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
