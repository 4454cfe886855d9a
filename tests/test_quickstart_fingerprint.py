"""The README's quick-start figures come out of this code: the first iterations of the quick
start give the losses that tools/quickstart_figures.py recorded with those figures, on any CPU.

Float32 results differ across CPU instruction sets, so the losses are compared with relative
tolerances derived from a measurement (docs/quickstart/figures.json, "spread"): the same run
with torch's instruction sets capped (ATEN_CPU_CAPABILITY=default, and that with
ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE) against the recording CPU (AVX2). The first
loss comes before any update and agreed to 1.8e-7; the next three follow updates and agreed
to 6.4e-5 (an AVX-512 Xeon against an AVX2 EPYC: 1.9e-5 at the fourth). The tolerances are
about 50x and 4x those. A change in data, weights, augmentation or loss moves the first loss
by far more: OpenCV instead of PIL resizing moved it by 6.5e-4.
"""
import json
import os

import pytest

import quickstart_figures  # dev/, which tools/quickstart_figures.py runs
from conftest import REPO

N = 4  # iterations re-run: enough to catch a change in data, weights, augmentation or loss
FIRST_REL = 1e-5  # the first loss: forward only, measured within 1.8e-7 across instruction sets
LATER_REL = 2.5e-4  # losses 2..N: measured within 6.4e-5 across instruction sets


def test_quick_start_first_losses_match_the_recorded_figures(tmp_path):
    with open(os.path.join(REPO, "docs", "quickstart", "figures.json")) as f:
        recorded = json.load(f)["first_losses"][:N]
    losses = quickstart_figures.fingerprint(N, str(tmp_path / "out"))
    hint = ("the quick start no longer gives the README's figures: rerun python "
            "tools/quickstart_figures.py and update the README from its output")
    assert losses[0] == pytest.approx(recorded[0], rel=FIRST_REL), hint
    assert losses[1:] == pytest.approx(recorded[1:], rel=LATER_REL), hint
