"""Convert a reference Rein release checkpoint into a rein_d2 checkpoint.

    python tools/convert_rein_checkpoint.py --config-file configs/rein_dinov2.yaml \
        --input dinov2_rein_and_head.pth --pretrained weights/dinov2_vitl16_512.pth \
        --output weights/rein_dinov2_gtav.pth

The release file (mmengine: {"meta", "state_dict"}) holds Rein (backbone.reins.*) and the
head (decode_head.*), sometimes the VFM (backbone.*). Every key is placed in the model the
config builds, or the conversion stops naming the key. --pretrained adds the frozen VFM,
either an official checkpoint or a file from tools/convert_pretrained.py, so the output is
one complete file for MODEL.WEIGHTS; without it the output holds the release's weights only.
"""
import argparse
import os
import sys

import torch
from detectron2.modeling import META_ARCH_REGISTRY

from rein_d2 import load_config
from rein_d2.checkpoint import (CheckpointMismatchError, convert_official_checkpoint,
                                convert_release_checkpoint,
                                load_official_checkpoint, read_checkpoint,
                                unwrap_release_checkpoint)
from rein_d2.engine import save_atomic
from rein_d2.utils.cli import UserError, exit_on_user_error, refuse_overwrite


def _pretrained_vfm(path, backbone):
    """backbone.vit.* weights from a convert_pretrained.py output or an official file."""
    state = load_official_checkpoint(path)
    if state and all(k.startswith("backbone.vit.") for k in state):
        return state  # already converted for rein_d2
    converted, report = convert_official_checkpoint(state, backbone)
    print(f"--pretrained: {report.summary()}")
    return {f"backbone.vit.{k}": v for k, v in converted.items()}


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config of the target model")
    parser.add_argument("--input", required=True, help="reference release checkpoint")
    parser.add_argument("--pretrained", help="VFM weights to include (official or converted)")
    parser.add_argument("--output", required=True, help="where to write the rein_d2 checkpoint")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    for path in filter(None, (args.input, args.pretrained)):
        if not os.path.isfile(path):
            raise UserError(f"no such checkpoint file: {path}")
    refuse_overwrite(args.output, [args.input, args.pretrained, args.config_file])
    with torch.device("meta"):  # shapes only: converting for a ViT-G costs no model memory
        # (not build_model: it moves the model to MODEL.DEVICE, which meta tensors cannot do)
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    ckpt = read_checkpoint(args.input)
    state, extra = unwrap_release_checkpoint(ckpt)
    weights, report = convert_release_checkpoint(state, model, extra)
    if args.pretrained:
        vfm = _pretrained_vfm(args.pretrained, model.backbone)
        both = sorted(set(vfm) & set(weights))
        if both:
            raise CheckpointMismatchError(
                f"{args.input} already holds the VFM; drop --pretrained ({both[0]}, ...)")
        weights.update(vfm)
        report.frozen_missing = [k for k in report.frozen_missing if k not in vfm]
    print(report.summary())
    out = {"model": {k: v.contiguous() for k, v in weights.items()},
           "__author__": "rein_d2.convert_rein_checkpoint", "matching_heuristics": False}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_atomic(out, args.output)  # never a half-written file under the final name
    print(f"wrote {len(weights)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
