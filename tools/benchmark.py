#!/usr/bin/env python
"""Speed, memory and storage of Rein against full fine-tuning, the frozen backbone, LoRA and
VPT (--help for the options; docs/PERFORMANCE.md). The program is dev/benchmark.py, outside the
rein_d2 package so that --baseline REV can measure another checkout's rein_d2."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev"))
from benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
