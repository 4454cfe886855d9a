#!/usr/bin/env python
"""Evaluate one model on several target domains in one run (domain generalization).
The program is rein_d2/tools/evaluate_dg.py (`python -m rein_d2.tools.evaluate_dg` runs it too);
--help for the options."""
import sys

from rein_d2.tools.evaluate_dg import main

if __name__ == "__main__":
    sys.exit(main())
