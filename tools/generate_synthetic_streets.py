#!/usr/bin/env python
"""Generate the synthstreets data sets (source-style train/val, target-style val) and a preview.
The program is rein_d2/tools/generate_synthetic_streets.py (`python -m
rein_d2.tools.generate_synthetic_streets` runs it too); --help for the options."""
import sys

from rein_d2.tools.generate_synthetic_streets import main

if __name__ == "__main__":
    sys.exit(main())
