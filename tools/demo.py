#!/usr/bin/env python
"""Run a Rein model on images, a video or a webcam and write colour overlays (--help for the
options; the program is rein_d2/tools/demo.py, its Python side rein_d2.Predictor)."""
import sys

from rein_d2.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
