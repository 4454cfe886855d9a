"""Train or evaluate a Rein model (detectron2's train_net, with the reference's recipe).

    python tools/train_net.py --config-file configs/rein_dinov2.yaml \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth
    python tools/train_net.py --config-file ... --resume            # continue in OUTPUT_DIR
    python tools/train_net.py --config-file ... --eval-only \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth MODEL.TRAINED_WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --eval-only --resume  # OUTPUT_DIR's last checkpoint
    python tools/train_net.py --config-file ... --num-gpus 8        # DDP through detectron2's launch

Evaluation covers every DATASETS.TEST target at its evaluation size and reports the mean over
the target domains (a test set of the training domain is reported apart). Instance and
panoptic datasets are scored by the detectron2 evaluator of their evaluator_type (mask AP, PQ).
TEST.AUG.ENABLED adds a flip / multi-scale test-time-augmentation evaluation (keys *_TTA, summary
in OUTPUT_DIR/inference_TTA). The evaluation protocol's keys (TEST.EVAL_SIZE, TEST.MIOU_CONVENTION,
TEST.CLASS_SUBSETS, MODEL.MASK2FORMER.TEST.MODE / CROP_SIZE / STRIDE; docs/EVALUATION.md) apply
here too, and every dg_summary.json records them.
Flags (--resume, --eval-only, --num-gpus) go before the KEY VALUE overrides. Wrong weights, a
config that does not fit the checkpoint, a diverging run, a failed save, a bad config value and
an OUTPUT_DIR in use by another training run (a lock file holds its pid and host) each stop
the run with one line saying what to do, and exit status 2.
"""
import logging
import sys

from detectron2.engine import default_argument_parser, hooks, launch
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from rein_d2 import load_config
from rein_d2.engine import (LightCheckpointer, ReinTrainer, TrainingDiverged, load_model_weights,
                            lock_output_dir)
from rein_d2.utils.cli import EXIT_REFUSED, UserError, one_line
from rein_d2.utils.logging import setup_logging

logger = logging.getLogger("rein_d2")


def setup(args, add_config=()):
    cfg = load_config(args.config_file, args.opts, add_config)
    cfg.freeze()
    if not args.eval_only and comm.is_main_process():  # before log.txt is opened
        lock_output_dir(cfg.OUTPUT_DIR)
    setup_logging(cfg, args)  # detectron2's default_setup, with no ANSI codes in log.txt
    return cfg


def evaluate(cfg, resume: bool):
    """As detectron2's --eval-only: with --resume, OUTPUT_DIR's last checkpoint (on top of the
    VFM from MODEL.WEIGHTS) when there is one; a model left partly random is refused."""
    model = ReinTrainer.build_model(cfg)
    checkpointer = LightCheckpointer(model, cfg.OUTPUT_DIR)
    last = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else ""
    if resume and not last:
        logger.warning("--resume: no last_checkpoint in %s; evaluating MODEL.WEIGHTS / "
                       "MODEL.TRAINED_WEIGHTS", cfg.OUTPUT_DIR)
    load_model_weights(cfg, model, resume_file=last)
    files = [f for f in (cfg.MODEL.WEIGHTS, cfg.MODEL.TRAINED_WEIGHTS, last) if f]  # as loaded, for the record
    results = ReinTrainer.test(cfg, model, weight_files=files)
    if cfg.TEST.AUG.ENABLED:
        results.update(ReinTrainer.test_with_TTA(cfg, model, weight_files=files))
    return results


def main(args, add_config=()):
    """``add_config``: a project's add_<x>_config functions, for its config keys."""
    try:
        cfg = setup(args, add_config)
        if args.eval_only:
            return evaluate(cfg, args.resume)
        trainer = ReinTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        if cfg.TEST.AUG.ENABLED:  # as Mask2Former: the TTA evaluation after training
            trainer.register_hooks([hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))])
        return trainer.train()
    except (UserError, TrainingDiverged) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)


def run(main_fn=None):
    """Parse the command line and run ``main_fn(args)`` (default: main) on --num-gpus processes
    through detectron2's launch; the projects' train_net.py scripts call this too."""
    args = default_argument_parser().parse_args()
    try:
        launch(main_fn or main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except ProcessExitedException as e:  # a worker process stopped; it printed why
        sys.exit(e.exit_code or 1)


if __name__ == "__main__":
    run()
