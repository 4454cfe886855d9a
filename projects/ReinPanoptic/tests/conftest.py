"""Puts projects/ReinPanoptic on sys.path, so that ``import rein_panoptic`` finds this project's
package (the tests run from the repository root, alone or together with tests/)."""
import os
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT not in sys.path:
    sys.path.insert(0, PROJECT)
