#!/usr/bin/env python
"""End-to-end learning check: train a small Rein model on real labelled street frames and report
the mIoU it reaches on them.
The program is dev/learn_street_frames.py, a developer's program outside the rein_d2 package;
--help for the options."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev"))
from learn_street_frames import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
