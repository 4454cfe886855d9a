#!/usr/bin/env python
"""Convert an official vision-foundation-model checkpoint into a file for MODEL.WEIGHTS.
The program is rein_d2/tools/convert_pretrained.py (`python -m rein_d2.tools.convert_pretrained`
runs it too); --help for the options."""
import sys

from rein_d2.tools.convert_pretrained import main

if __name__ == "__main__":
    sys.exit(main())
