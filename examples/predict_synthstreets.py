#!/usr/bin/env python
"""rein_d2.Predictor from Python, on the quick start's own frames: predict a few synthstreets
validation frames (generated on first use, the same files `make quickstart` uses), score each
against its label, and write overlays with a legend.

    make quickstart                               # trains output/quickstart/model_final.pth
    python examples/predict_synthstreets.py       # the first 3 target-style validation frames
    python examples/predict_synthstreets.py --split source_val --frames 5 --output my_overlays

--config-file and --weights default to the quick start's config and its trained model; config
overrides (KEY VALUE ...) may follow. The frames live in $DETECTRON2_DATASETS/synthstreets
(default ./datasets/synthstreets). The code below is what a script of one's own needs.
"""
import argparse
import os
import sys

import cv2
import numpy as np

from rein_d2 import Predictor
from rein_d2.data.datasets.common import IGNORE_LABEL, datasets_root
from rein_d2.data.synthetic_streets import SPLITS, generate
from rein_d2.utils.cli import UserError, exit_on_user_error

QUICKSTART_CONFIG = "configs/quickstart/synthstreets_dinov2_s.yaml"
QUICKSTART_WEIGHTS = "output/quickstart/model_final.pth"


def quickstart_frames(split: str, n: int):
    """The first ``n`` frames of synthstreets_<split> (dataset dicts), rendered if missing:
    frame i depends only on the split's seed and i, so these are the registered dataset's."""
    style, seed = SPLITS[f"synthstreets_{split}"]
    return generate(os.path.join(datasets_root(), "synthstreets"), split, n, style, seed=seed)


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config-file", default=QUICKSTART_CONFIG)
    parser.add_argument("--weights", default=QUICKSTART_WEIGHTS)
    parser.add_argument("--split", default="target_val", choices=[s[len("synthstreets_"):] for s in SPLITS])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--output", default="output/quickstart/predictor")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    if not os.path.isfile(args.weights):
        raise UserError(f"--weights {args.weights} not found: train the quick start first (make quickstart) "
                        "or pass a model trained with --config-file")

    # 1. A predictor: the config, the trained weights (checked as every tool checks them).
    predictor = Predictor(args.config_file, weights=args.weights, opts=args.opts)
    os.makedirs(args.output, exist_ok=True)
    for frame in quickstart_frames(args.split, args.frames):
        # 2. One call per image: a path here; an HxWx3 BGR uint8 array, or a list, works too.
        prediction = predictor(frame["file_name"])
        labels, probabilities = prediction.labels, prediction.probabilities  # HxW, KxHxW
        # 3. Anything numpy does: pixel accuracy against the label, confidence, class shares.
        truth = cv2.imread(frame["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        scored = truth != IGNORE_LABEL
        accuracy = float((labels[scored] == truth[scored]).mean())
        shares = np.bincount(labels.ravel(), minlength=len(predictor.class_names)) / labels.size
        top = ", ".join(f"{predictor.class_names[c]} {shares[c]:.0%}" for c in np.argsort(-shares)[:3])
        # 4. An overlay with the class names and a legend (BGR, for cv2.imwrite).
        out = os.path.join(args.output, os.path.basename(frame["file_name"]))
        if not cv2.imwrite(out, predictor.draw(frame["file_name"], prediction)):
            raise UserError(f"cannot write {out}: pass an --output folder you can write to")
        print(f"{frame['file_name']}: pixel accuracy {accuracy:.1%}, mean confidence "
              f"{probabilities.max(axis=0).mean():.2f}, most pixels: {top}; overlay {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
