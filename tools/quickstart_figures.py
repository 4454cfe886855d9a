#!/usr/bin/env python
"""Run the quick start and print every figure the README quotes of it (`make quickstart`).

    python tools/quickstart_figures.py                  # train, evaluate, draw; print the figures
    python tools/quickstart_figures.py --fingerprint 5  # the raw losses of the first 5 iterations

The full run trains configs/quickstart/synthstreets_dinov2_s.yaml exactly as
`tools/train_net.py --config-file <it>` does (same set-up, seeding and trainer), evaluates
both validation sets, draws the demo pictures with tools/demo.py, then prints the README's
tables and writes them with the first iterations' losses to docs/quickstart/figures.json.
tests/test_quickstart_fingerprint.py re-runs the first iterations and compares their losses
with that file, so a change that alters the README's figures fails the tests until the
figures are regenerated with this script.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
from detectron2.engine import default_argument_parser

import train_net
from rein_d2.engine import ReinTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join("configs", "quickstart", "synthstreets_dinov2_s.yaml")
FIGURES = os.path.join(REPO, "docs", "quickstart", "figures.json")
FINGERPRINT_ITERS = 20  # losses recorded for the fingerprint test


def train(opts=(), eval_at_end=True, stop_after=None):
    """train_net's set-up and ReinTrainer; returns (trainer, raw total losses by iteration).
    ``stop_after`` ends the run after that many iterations with everything else (the learning
    rate schedule over the config's MAX_ITER included) as in the full run."""
    args = default_argument_parser().parse_args(["--config-file", os.path.join(REPO, CONFIG), *opts])
    cfg = train_net.setup(args)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    if not eval_at_end:  # the fingerprint: no evaluation hook
        trainer._hooks = [h for h in trainer._hooks if type(h).__name__ != "EvalHook"]
    if stop_after:
        trainer.max_iter = stop_after
    trainer.train()
    losses = [v for v, _ in sorted(trainer.storage.history("total_loss").values(), key=lambda x: x[1])]
    return trainer, losses


def fingerprint(n: int, output_dir: str):
    """Total losses of the quick start's first ``n`` iterations (no evaluation, no saves)."""
    _, losses = train(["SOLVER.CHECKPOINT_PERIOD", "1000000", "OUTPUT_DIR", output_dir],
                      eval_at_end=False, stop_after=n)
    return losses


def tables(summary) -> str:
    names = list(summary["mIoU"])
    lines = ["| dataset | domain | mIoU | mAcc | aAcc |", "|:--|:--|--:|--:|--:|"]
    lines += [f"| {n} | {'source' if n in summary['source'] else 'target'} | {summary['mIoU'][n]:.2f} | "
              f"{summary['mAcc'][n]:.2f} | {summary['aAcc'][n]:.2f} |" for n in names]
    lines += [f"| mean over targets | | {summary['mean_mIoU']:.2f} | {summary['mean_mAcc']:.2f} | "
              f"{summary['mean_aAcc']:.2f} |", "", "| class | " + " | ".join(names) + " |",
              "|:--|" + "--:|" * len(names)]
    zero = []
    for i, c in enumerate(summary["classes"]):
        ious = [summary["IoU"][n][i] for n in names]
        if all(round(v, 2) == 0 for v in ious):
            zero.append(c)
        else:
            lines.append(f"| {c} | " + " | ".join(f"{v:.2f}" for v in ious) + " |")
    lines.append(f"\n(0.00 in every column, left out: {', '.join(zero) or 'none'})")
    return "\n".join(lines)


PICTURE = os.path.join(REPO, "docs", "quickstart", "predictions.jpg")


def picture(frames, overlays, dst=PICTURE):
    """The README's picture: the input frames on top, the demo's overlays below them."""
    import numpy as np
    from PIL import Image

    top = np.concatenate([np.asarray(Image.open(f).convert("RGB")) for f in frames], 1)
    bottom = np.concatenate([np.asarray(Image.open(f).convert("RGB")) for f in overlays], 1)
    Image.fromarray(np.concatenate([top, bottom], 0)).save(dst, quality=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fingerprint", type=int, metavar="N", help="print the first N losses only")
    args = parser.parse_args(argv)
    if args.fingerprint:
        print(json.dumps(fingerprint(args.fingerprint, os.path.join("output", "quickstart_fingerprint"))))
        return 0
    start = time.time()
    trainer, losses = train()
    out = trainer.cfg.OUTPUT_DIR
    with open(os.path.join(out, "inference", "dg_summary.json")) as f:
        summary = json.load(f)
    synth = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthstreets")
    frames = [os.path.join(synth, "source_val", "images", "00000.png")] + [
        os.path.join(synth, "target_val", "images", f"0000{i}.png") for i in range(3)]
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo.py"), "--config-file",
                    os.path.join(REPO, CONFIG), "--output", os.path.join(out, "predictions"),
                    "--input", *frames, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")], check=True)
    # one source and one target frame (the demo names the second 00000.png "00000_1.png")
    picture(frames[:2], [os.path.join(out, "predictions", n) for n in ("00000.png", "00000_1.png")])
    minutes, seconds = divmod(round(time.time() - start), 60)
    record = {"command": "python tools/quickstart_figures.py", "config": CONFIG,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "first_losses": losses[:FINGERPRINT_ITERS], "summary": summary,
              "wall_time": f"{minutes} min {seconds} s"}
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "w") as f:
        json.dump(record, f, indent=1)
    print("\n" + tables(summary))
    print(f"\nquick start: {minutes} min {seconds} s (training, evaluation and demo); "
          f"figures and the first {FINGERPRINT_ITERS} losses written to {os.path.relpath(FIGURES, REPO)}, "
          f"the picture to {os.path.relpath(PICTURE, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
