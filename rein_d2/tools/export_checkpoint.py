"""Export a trained Rein model as one full MODEL.WEIGHTS file, or extract its light file.

    # full: the VFM (MODEL.WEIGHTS) + the trained part (MODEL.TRAINED_WEIGHTS) in one file
    python tools/export_checkpoint.py --config-file configs/rein_dinov2.yaml \
        --output rein_dinov2_gtav_full.pth \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth MODEL.TRAINED_WEIGHTS output/model_final.pth
    # light: only the trained weights (Rein, head, anything else that trains) from a full file
    # or a training checkpoint, without optimiser state; load it as MODEL.TRAINED_WEIGHTS
    python tools/export_checkpoint.py --config-file configs/rein_dinov2.yaml --light \
        --output rein_dinov2_gtav_light.pth MODEL.WEIGHTS rein_dinov2_gtav_full.pth

The model the config builds is loaded as train_net.py --eval-only would load it. Every weight
the output holds must have come from a file: an export that would carry random weights (a
missing VFM, a missing trained part, a config that does not match the checkpoint) is refused,
naming the weights. Outputs hold weights only ({"model": ...}) and are written atomically.
"""
import argparse
import os
import sys

from detectron2.modeling import build_model

from rein_d2 import load_config
from rein_d2.engine import frozen_keys, light_state_dict, load_model_weights, save_atomic
from rein_d2.utils.cli import UserError, exit_on_user_error, refuse_overwrite


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config the checkpoint was trained with")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--light", action="store_true",
                        help="write only the weights that train (no frozen VFM)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts + ["MODEL.DEVICE", "cpu"])
    if not (cfg.MODEL.WEIGHTS or cfg.MODEL.TRAINED_WEIGHTS):
        parser.error("give the weights to export: MODEL.WEIGHTS (VFM or full file) and, for a "
                     "light training checkpoint, MODEL.TRAINED_WEIGHTS")
    refuse_overwrite(args.output, (cfg.MODEL.WEIGHTS, cfg.MODEL.TRAINED_WEIGHTS, args.config_file))
    if args.light:  # the VFM is not exported: only the trained part must come from a file
        cfg.MODEL.ALLOW_RANDOM_WEIGHTS = True
    model = build_model(cfg)
    loaded = load_model_weights(cfg, model)
    state = light_state_dict(model) if args.light else model.state_dict()
    missing = [k for k in state if k not in loaded]
    if missing:
        frozen = set(frozen_keys(model))
        what = ("the frozen VFM: set MODEL.WEIGHTS to the converted VFM (tools/convert_pretrained.py)"
                if all(k in frozen for k in missing) else
                "trained weights: set MODEL.TRAINED_WEIGHTS to the training checkpoint, and check "
                "that the config is the one it was trained with")
        raise UserError(f"{len(missing)} of the {len(state)} weights to export were in no file "
                        f"(first: {', '.join(missing[:5])}); they are {what}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_atomic({"model": {k: v.detach().cpu() for k, v in state.items()}, "rein_d2_light": args.light},
                args.output)
    n = sum(v.numel() for v in state.values())
    print(f"wrote {'light' if args.light else 'full'} checkpoint: {len(state)} tensors, {n:,} values, "
          f"{os.path.getsize(args.output) / 2**20:.1f} MiB -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
