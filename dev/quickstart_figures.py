"""Run the quick start and print every figure the README quotes of it (`make quickstart`).

    python tools/quickstart_figures.py                  # train, evaluate, draw; print the figures
    python tools/quickstart_figures.py --fingerprint 5  # the raw losses of the first 5 iterations
    python tools/quickstart_figures.py --seed 2 --record output/spread/seed2.json  # another run
    python tools/quickstart_figures.py --spread output/spread/*.json  # their spread into figures.json

The full run trains configs/quickstart/synthstreets_dinov2_s.yaml exactly as
`tools/train_net.py --config-file <it>` does (same set-up, seeding and trainer), evaluates
both validation sets, draws the demo pictures with tools/demo.py, then prints the README's
tables and writes them with the first iterations' losses to docs/quickstart/figures.json.
tests/test_quickstart_fingerprint.py re-runs the first iterations and compares their losses
with that file, so a change that alters the README's figures fails the tests until the
figures are regenerated with this script.

Float32 results differ across CPU instruction sets (and the masked-attention thresholds
amplify it), so every record names its CPU, and ``--spread`` adds to figures.json how far
runs with other seeds (``--seed``) and other instruction sets (run under
ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA, MKL_CBWR) land from the recorded figures.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
from detectron2.engine import default_argument_parser

from benchmark import cpu_model  # dev/benchmark.py
from rein_d2 import load_config
from rein_d2.engine import ReinTrainer
from rein_d2.tools import train_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join("configs", "quickstart", "synthstreets_dinov2_s.yaml")
FIGURES = os.path.join(REPO, "docs", "quickstart", "figures.json")
FINGERPRINT_ITERS = 20  # losses recorded for the fingerprint test
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")  # instruction-set caps


def machine() -> dict:
    """The CPU a record comes from, and what limits the instruction sets torch uses on it."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "env": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ}}


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


def fingerprint(n: int, output_dir: str, opts=()):
    """Total losses of the quick start's first ``n`` iterations (no evaluation, no saves)."""
    _, losses = train(["SOLVER.CHECKPOINT_PERIOD", "1000000", "OUTPUT_DIR", output_dir, *opts],
                      eval_at_end=False, stop_after=n)
    return losses


def spread(main: dict, runs: list) -> dict:
    """How far other runs land from the recorded figures: mIoU per dataset across seeds (same
    CPU settings) and across instruction sets (same seed), and the first losses' largest
    relative difference across instruction sets, per iteration (fingerprint records count)."""
    def miou(r):
        return {n: round(v, 2) for n, v in r["summary"]["mIoU"].items()}

    everything = [main] + runs
    out = {"runs": [{k: r[k] for k in ("command", "seed", "machine")} | (
        {"mIoU": miou(r)} if "summary" in r else {"first_losses": r["first_losses"]}) for r in runs]}
    for key, group in (("across_seeds", [r for r in everything if r["machine"] == main["machine"]]),
                       ("across_instruction_sets", [r for r in everything if r["seed"] == main["seed"]])):
        full = [r for r in group if "summary" in r]
        out[key] = {"full_runs": len(full), "seeds": sorted({r["seed"] for r in full}),
                    "mIoU_min_max": {n: [min(miou(r)[n] for r in full), max(miou(r)[n] for r in full)]
                                     for n in miou(main)}}
    same_seed = [r for r in runs if r["seed"] == main["seed"]]
    base = main["first_losses"][:max((len(r["first_losses"]) for r in same_seed), default=0)]
    out["across_instruction_sets"]["first_losses_max_rel_diff"] = [
        max(abs(r["first_losses"][i] - b) / abs(b) for r in same_seed if i < len(r["first_losses"]))
        for i, b in enumerate(base)]
    return out


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


def command_line(args) -> str:
    """The command that made a record, with the instruction-set caps it ran under."""
    words = [f"{k}={v}" for k, v in machine()["env"].items()] + ["python", "tools/quickstart_figures.py"]
    if args.fingerprint:
        words += ["--fingerprint", str(args.fingerprint)]
    if args.seed is not None:
        words += ["--seed", str(args.seed)]
    if os.path.abspath(args.record) != os.path.abspath(FIGURES):
        words += ["--record", args.record]
    return " ".join(words)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fingerprint", type=int, metavar="N", help="print the first N losses only")
    parser.add_argument("--seed", type=int, help="SEED for this run (default: the config's)")
    parser.add_argument("--record", default=FIGURES, metavar="JSON",
                        help="where the run's record goes (default: docs/quickstart/figures.json, "
                             "with the picture; elsewhere: the record only)")
    parser.add_argument("--spread", nargs="+", metavar="JSON",
                        help="records of other runs: write their spread into figures.json, no run")
    args = parser.parse_args(argv)
    if args.spread:
        with open(FIGURES) as f:
            record = json.load(f)
        runs = []
        for path in args.spread:
            with open(path) as f:
                runs.append(json.load(f))
        # (entries this does not compute, e.g. a comparison with another CPU's record, are kept)
        record["spread"] = {**record.get("spread", {}), **spread(record, runs)}
        with open(FIGURES, "w") as f:
            json.dump(record, f, indent=1)
        print(json.dumps({k: v for k, v in record["spread"].items() if k != "runs"}, indent=1))
        return 0
    opts = ["SEED", str(args.seed)] if args.seed is not None else []
    default_record = os.path.abspath(args.record) == os.path.abspath(FIGURES)
    if args.fingerprint:
        losses = fingerprint(args.fingerprint, os.path.join("output", "quickstart_fingerprint"), opts)
        if not default_record:  # a record for --spread
            os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
            with open(args.record, "w") as f:
                json.dump({"command": command_line(args), "config": CONFIG, "torch": torch.__version__,
                           "seed": args.seed if args.seed is not None
                           else load_config(os.path.join(REPO, CONFIG)).SEED,
                           "machine": machine(), "first_losses": losses}, f, indent=1)
        print(json.dumps(losses))
        return 0
    if not default_record:  # another run: its own output folder, the README's untouched
        opts += ["OUTPUT_DIR", os.path.splitext(args.record)[0] + "_output"]
    start = time.time()
    trainer, losses = train(opts)
    out = trainer.cfg.OUTPUT_DIR
    with open(os.path.join(out, "inference", "dg_summary.json")) as f:
        summary = json.load(f)
    if default_record:
        synth = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthstreets")
        frames = [os.path.join(synth, "source_val", "images", "00000.png")] + [
            os.path.join(synth, "target_val", "images", f"0000{i}.png") for i in range(3)]
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo.py"), "--config-file",
                        os.path.join(REPO, CONFIG), "--output", os.path.join(out, "predictions"),
                        "--input", *frames, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")],
                       check=True)
        # one source and one target frame (the demo names the second 00000.png "00000_1.png")
        picture(frames[:2], [os.path.join(out, "predictions", n) for n in ("00000.png", "00000_1.png")])
    minutes, seconds = divmod(round(time.time() - start), 60)
    record = {"command": command_line(args), "config": CONFIG, "torch": torch.__version__,
              "seed": trainer.cfg.SEED, "machine": machine(),
              "first_losses": losses[:FINGERPRINT_ITERS], "summary": summary,
              "wall_time": f"{minutes} min {seconds} s"}
    os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
    with open(args.record, "w") as f:
        json.dump(record, f, indent=1)
    print("\n" + tables(summary))
    print(f"\nquick start: {minutes} min {seconds} s (training, evaluation"
          f"{', demo' if default_record else ''}); figures and the first {FINGERPRINT_ITERS} losses "
          f"written to {args.record}" + (f", the picture to {os.path.relpath(PICTURE, REPO)}"
                                        if default_record else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
