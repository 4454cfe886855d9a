"""examples/predict_synthstreets.py runs as docs/GETTING_STARTED.md shows it: the Predictor on
the quick start's own frames (rendered into a fresh dataset folder), with a trained model's
weights (here the miniature model's, saved whole), printing scores and writing overlays."""
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import torch
from detectron2.modeling import build_model

from conftest import REPO
from rein_d2 import load_config
from rein_d2.engine import LightCheckpointer
from test_meta_arch import MINI_ARCH

CONFIG = os.path.join(REPO, "configs", "quickstart", "synthstreets_dinov2_s.yaml")
# the quick start's 19 classes; the miniature architecture, whole-image inference
OPTS = [str(x) for x in MINI_ARCH] + ["MODEL.MASK2FORMER.TEST.MODE", "whole", "MODEL.DEVICE", "cpu"]


def test_the_predictor_example_on_the_quickstart_frames(tmp_path):
    torch.manual_seed(0)
    LightCheckpointer(build_model(load_config(CONFIG, OPTS)), str(tmp_path), light=False).save("model_final")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    out = tmp_path / "overlays"
    proc = subprocess.run([sys.executable, "examples/predict_synthstreets.py", "--weights",
                           str(tmp_path / "model_final.pth"), "--frames", "2", "--output", str(out), *OPTS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "pixel accuracy" in line]
    assert len(lines) == 2, proc.stdout
    for i, line in enumerate(lines):
        frame = tmp_path / "datasets" / "synthstreets" / "target_val" / "images" / f"{i:05d}.png"
        assert line.startswith(f"{frame}: pixel accuracy ") and re.search(r"most pixels: \w", line)
        overlay, image = cv2.imread(str(out / frame.name)), cv2.imread(str(frame))
        assert overlay.shape == image.shape == (256, 512, 3)
        assert np.abs(overlay.astype(int) - image.astype(int)).mean() > 5

