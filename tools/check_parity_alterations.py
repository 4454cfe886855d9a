#!/usr/bin/env python
"""Check that the reference-parity tests fail when one conversion or module detail is altered
(--help for the options; docs/COMPATIBILITY.md). The program is dev/check_parity_alterations.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev"))
from check_parity_alterations import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
