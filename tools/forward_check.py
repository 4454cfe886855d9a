#!/usr/bin/env python
"""Build a model from a config and run one forward (and optionally backward) pass on CPU/GPU.
The program is rein_d2/tools/forward_check.py (`python -m rein_d2.tools.forward_check` runs it
too); --help for the options."""
import sys

from rein_d2.tools.forward_check import main

if __name__ == "__main__":
    sys.exit(main())
