#!/usr/bin/env python
"""Run a Rein model on images, a video or a webcam and write colour overlays.
The program is rein_d2/tools/demo.py (`python -m rein_d2.tools.demo` runs it too; its Python side
is rein_d2.Predictor); --help for the options."""
import sys

from rein_d2.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
