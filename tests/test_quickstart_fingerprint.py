"""The README's quick-start figures come out of this code: the first iterations of the quick
start give the losses that tools/quickstart_figures.py recorded with those figures."""
import importlib.util
import json
import os
import sys

import pytest

from conftest import REPO

N = 4  # iterations re-run: enough to catch a change in data, weights, augmentation or loss


def test_quick_start_first_losses_match_the_recorded_figures(tmp_path):
    with open(os.path.join(REPO, "docs", "quickstart", "figures.json")) as f:
        recorded = json.load(f)
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        spec = importlib.util.spec_from_file_location("quickstart_figures",
                                                      os.path.join(REPO, "tools", "quickstart_figures.py"))
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
    finally:
        sys.path.remove(os.path.join(REPO, "tools"))
    losses = tool.fingerprint(N, str(tmp_path / "out"))
    assert losses == pytest.approx(recorded["first_losses"][:N], rel=1e-5), (
        "the quick start no longer gives the README's figures: rerun python tools/quickstart_figures.py "
        "and update the README from its output")
