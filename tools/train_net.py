#!/usr/bin/env python
"""Train or evaluate a Rein model (detectron2's train_net, with the reference's recipe).

    python tools/train_net.py --config-file configs/rein_dinov2.yaml \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth
    python tools/train_net.py --config-file ... --resume            # continue in OUTPUT_DIR
    python tools/train_net.py --config-file ... --eval-only \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth MODEL.TRAINED_WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 8        # DDP through detectron2's launch

Evaluation covers every DATASETS.TEST target at its evaluation size and reports the mean.
"""
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from rein_d2 import load_config
from rein_d2.engine import ReinTrainer, load_model_weights


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="rein_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = ReinTrainer.build_model(cfg)
        load_model_weights(cfg, model)
        return ReinTrainer.test(cfg, model)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
