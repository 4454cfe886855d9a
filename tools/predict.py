#!/usr/bin/env python
"""Predict a registered split or an image folder into the benchmark servers' formats.
The program is rein_d2/tools/predict.py (`python -m rein_d2.tools.predict` runs it too); --help for
the options."""
import sys

from rein_d2.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())
