"""Generate the synthstreets data sets (source-style train/val, target-style val) and a preview.

    python tools/generate_synthetic_streets.py --root datasets/synthstreets \
        --n-train 200 --n-val 50 --preview synthstreets_preview.png

Generation is deterministic for --seed and resumable (existing image/label pairs are kept).
The preview mosaic shows, per row, a source frame + its colourised label and a target frame +
its colourised label.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np

from rein_d2.data.synthetic_streets import SPLITS, generate, make_mosaic


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="datasets/synthstreets")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-val", type=int, default=50)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", default=None, help="PNG path for a preview mosaic (default <root>/preview.png)")
    ap.add_argument("--preview-rows", type=int, default=4)
    args = ap.parse_args(argv)

    out = {}
    for name, (style, off) in SPLITS.items():
        split = name[len("synthstreets_"):]
        n = args.n_train if split.endswith("train") else args.n_val
        t = time.time()
        out[split] = generate(args.root, split, n, style, args.height, args.width, args.seed + off)
        print(f"{name}: {n} frames ({style}) in {os.path.join(args.root, split)} [{time.time() - t:.1f} s]")

    def load(d):
        img = cv2.cvtColor(cv2.imread(d["file_name"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return img, cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)

    k = min(args.preview_rows, len(out["source_train"]), len(out["target_val"]))
    if k > 0:
        left = make_mosaic([load(d) for d in out["source_train"][:k]])
        right = make_mosaic([load(d) for d in out["target_val"][:k]])
        mosaic = np.concatenate([left, right], 1)
        path = args.preview or os.path.join(args.root, "preview.png")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        cv2.imwrite(path, cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
