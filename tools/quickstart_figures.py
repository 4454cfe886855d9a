#!/usr/bin/env python
"""Run the quick start and print every figure the README quotes of it (`make quickstart`).
The program is dev/quickstart_figures.py, a developer's program outside the rein_d2 package; --help
for the options."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev"))
from quickstart_figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
