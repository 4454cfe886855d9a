#!/usr/bin/env python
"""Aggregate several runs of one setting (e.g. seeds) into mean ± std per dataset and class.
The program is rein_d2/tools/aggregate_runs.py (`python -m rein_d2.tools.aggregate_runs` runs it
too); --help for the options."""
import sys

from rein_d2.tools.aggregate_runs import main

if __name__ == "__main__":
    sys.exit(main())
