#!/usr/bin/env python
"""Convert an official vision-foundation-model checkpoint into a file for MODEL.WEIGHTS.

    python tools/convert_pretrained.py --config-file configs/rein_dinov2.yaml \
        --input dinov2_vitl14_pretrain.pth --output weights/dinov2_vitl16_512.pth

The config says which backbone (MODEL.BACKBONE.NAME, MODEL.VIT.*) the weights are for: the
official 14x14 patch kernel and position table are resized to its patch size and grid
(REIN_SPEC section 3). Supported: DINOv2 (facebookresearch .pth), EVA02 (BAAI, in "model"),
OpenAI CLIP ViT-L/14 (TorchScript .pt), SAM (segment-anything, image_encoder.*) and MAE (in
"model"). A checkpoint of another architecture is refused with the reason.
"""
import argparse
import os
import sys

import torch
from detectron2.modeling import build_backbone

from rein_d2 import load_config
from rein_d2.checkpoint import (CheckpointMismatchError, convert_official_checkpoint,
                                load_official_checkpoint)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config of the target backbone")
    parser.add_argument("--input", required=True, help="official checkpoint file")
    parser.add_argument("--output", required=True, help="where to write the MODEL.WEIGHTS file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    if not os.path.isfile(args.input):
        print(f"error: no such checkpoint file: {args.input}", file=sys.stderr)
        return 2
    with torch.device("meta"):  # only shapes are needed: no memory for a weightless ViT-G
        backbone = build_backbone(cfg)
    try:
        state = load_official_checkpoint(args.input)
        converted, report = convert_official_checkpoint(state, backbone)
    except CheckpointMismatchError as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    out = {
        "model": {f"backbone.vit.{k}": v.contiguous() for k, v in converted.items()},
        "__author__": "rein_d2.convert_pretrained",
        "matching_heuristics": False,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    torch.save(out, tmp)
    os.replace(tmp, args.output)  # never leave a half-written file under the final name
    print(f"wrote {len(converted)} tensors for {backbone.arch.timm_name} "
          f"(patch {backbone.patch_size}, image {backbone.img_size}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
