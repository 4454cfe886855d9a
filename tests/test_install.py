"""Installing rein_d2 into an existing environment changes nothing the user chose: a pip dry
run in a clean venv holding numpy 2 and opencv-python would install neither another numpy nor a
second OpenCV."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_install_keeps_numpy_2_and_the_users_opencv(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}  # make's pinned stack
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    setup = subprocess.run(pip + ["install", "-q", "numpy==2.1.3", "opencv-python==4.10.0.84"],
                           env=env, capture_output=True, text=True)
    if setup.returncode:
        pytest.skip(f"cannot build the user's environment here (no package index?): {setup.stderr[-300:]}")
    report = tmp_path / "report.json"
    dry = subprocess.run(pip + ["install", "--dry-run", "--report", str(report), "-e", REPO],
                         env=env, capture_output=True, text=True)
    if dry.returncode and "ResolutionImpossible" not in dry.stderr and "conflict" not in dry.stderr:
        pytest.skip(f"the package index did not answer: {dry.stderr[-300:]}")  # not a verdict
    assert dry.returncode == 0, dry.stderr[-2000:]  # a resolution conflict is one
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "rein_d2" in names and {"torch", "timm", "fvcore"} <= names  # it did resolve
    assert "numpy" not in names, "would replace the user's numpy 2"
    assert not {n for n in names if n.startswith("opencv")}, "would add a second OpenCV"
