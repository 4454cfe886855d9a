"""Evaluate one model on several target domains in one run (domain generalization).

    python tools/evaluate_dg.py --config-file configs/rein_dinov2.yaml \
        --datasets cityscapes_rein_val bdd100k_sem_seg_val mapillary_val \
        --output-dir output/dg MODEL.WEIGHTS weights/rein_dinov2_gtav.pth

Each target is evaluated at its own evaluation size (its metadata's eval_size) and scored by
its kind: semantic datasets by detectron2's SemSegEvaluator (mIoU, mAcc, aAcc, per-class IoU);
panoptic and instance datasets (evaluator_type coco_panoptic_seg, cityscapes_panoptic_seg, coco,
cityscapes_instance) by PQ (PQ_th, PQ_st, SQ, RQ), mask AP (AP, AP50) and mIoU, as the config's
MODEL.MASK2FORMER.TEST flags ask (rein_d2.evaluation.EVALUATORS). Prints a row per dataset and
the mean over the targets, and writes dg_summary.{json,csv,png} to --output-dir. Without
--datasets, DATASETS.TEST is used. A config under projects/<Name>/ registers that project's
datasets (rein_d2.load_config imports its package).

The protocol is recorded in dg_summary.json and printed above the table (docs/EVALUATION.md):
`--eval-size W H` (or TEST.EVAL_SIZE "(W, H)") evaluates every target at that size instead of
its own; MODEL.MASK2FORMER.TEST.MODE / CROP_SIZE / STRIDE choose whole image or windows;
TEST.MIOU_CONVENTION mmseg scores as the reference does; TEST.CLASS_SUBSETS "['synthia16',
'synthia13']" adds mIoU16 / mIoU13.

With --corruptions (e.g. `--corruptions all`, Cityscapes-C's 15 + 4), each (semantic) target is also
scored under every corruption at every --severities level, applied deterministically at
evaluation time: mIoU per corruption and severity, their mean (mPC) and its ratio to the clean
mIoU (rPC), in robustness_<target>.{json,csv,png} (the png a heat map).
"""
import argparse
import os
import sys

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from rein_d2 import load_config
from rein_d2.engine import load_model_weights
from rein_d2.data.corruptions import corruption_names
from rein_d2.data.datasets.common import require_registered
from rein_d2.evaluation import evaluate_domain_generalization
from rein_d2.evaluation.robustness import evaluate_robustness
from rein_d2.utils.cli import exit_on_user_error, reclaim_overrides, refuse_overwrite
from rein_d2.utils.files import space_errors_name


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--datasets", nargs="+", help="registered target datasets")
    parser.add_argument("--output-dir", default="output/dg")
    parser.add_argument("--eval-size", nargs=2, type=int, metavar=("W", "H"),
                        help="evaluate every target at this size (long, short edge limits, aspect "
                             "kept) instead of its own: sets TEST.EVAL_SIZE")
    parser.add_argument("--corruptions", nargs="+", metavar="NAME",
                        help="also score each target under these image corruptions: names of the "
                             "imagecorruptions package, or common (15), extra (4), all (19)")
    parser.add_argument("--severities", nargs="+", default=["1", "2", "3", "4", "5"])
    parser.add_argument("--corruption-seed", type=int, default=0)
    parser.add_argument("--corruption-cache", metavar="DIR",
                        help="keep the corrupted images here and reuse them (default: no cache)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = reclaim_overrides(parser.parse_args(argv), "datasets", "corruptions", "severities")

    try:  # a typo in a name or a severity: said before any model is built
        corruptions = corruption_names(args.corruptions or [])
        args.severities = [int(s) for s in args.severities]
        if not all(1 <= s <= 5 for s in args.severities):
            raise ValueError(f"--severities must be 1..5, got {args.severities}")
    except ValueError as e:
        parser.error(str(e))
    if args.eval_size:
        args.opts += ["TEST.EVAL_SIZE", str(tuple(args.eval_size))]
    cfg = load_config(args.config_file, args.opts)
    names = args.datasets or list(cfg.DATASETS.TEST)
    require_registered(names, "--datasets" if args.datasets else "DATASETS.TEST")
    outputs = [os.path.join(args.output_dir, f"{stem}.{ext}") for ext in ("json", "csv", "png")
               for stem in ["dg_summary"] + [f"robustness_{n}" for n in names]]
    refuse_overwrite(outputs, [args.config_file, cfg.MODEL.WEIGHTS, cfg.MODEL.TRAINED_WEIGHTS],
                     "--output-dir")
    setup_logger(name="rein_d2")
    model = build_model(cfg).eval()
    load_model_weights(cfg, model)  # MODEL.WEIGHTS, then MODEL.TRAINED_WEIGHTS; all or refused
    with torch.no_grad(), space_errors_name(args.output_dir):  # a full disk: one line
        summary = evaluate_domain_generalization(cfg, model, names, args.output_dir)
    print(summary.table())
    print(f"wrote {args.output_dir}/dg_summary.json, .csv and .png")
    if corruptions:
        for name in names:
            with torch.no_grad(), space_errors_name(args.output_dir):
                robust = evaluate_robustness(cfg, model, name, corruptions, args.severities, args.output_dir,
                                             args.corruption_seed, args.corruption_cache)
            print(robust.table())
            print(f"wrote {args.output_dir}/robustness_{name}.json, .csv and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
