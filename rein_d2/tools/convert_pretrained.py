"""Convert an official vision-foundation-model checkpoint into a file for MODEL.WEIGHTS.

    python tools/convert_pretrained.py --config-file configs/rein_dinov2.yaml \
        --input dinov2_vitl14_pretrain.pth --output weights/dinov2_vitl16_512.pth

The config says which backbone (MODEL.BACKBONE.NAME, MODEL.VIT.*) the weights are for: the
official 14x14 patch kernel and position table are resized to its patch size and grid
(docs/method.md section 3). Supported: DINOv2 (facebookresearch .pth), DINOv3 (Meta's .pth),
EVA02 (BAAI, in "model"), OpenAI CLIP ViT-L/14 (TorchScript .pt), SAM (segment-anything,
image_encoder.*), MAE (in "model"), any timm ViT by name (its timm checkpoint), ResNet-50/101
V1c (mmseg / mmcls / timm) and ConvNeXt-L (the official 22k release, mmpretrain / mmcls or
timm). A checkpoint of another architecture is refused with the reason.
"""
import argparse
import os
import sys

import torch
from detectron2.modeling import build_backbone

from rein_d2 import load_config
from rein_d2.checkpoint import convert_official_checkpoint, load_official_checkpoint
from rein_d2.engine import save_atomic
from rein_d2.utils.cli import UserError, exit_on_user_error, refuse_overwrite


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config of the target backbone")
    parser.add_argument("--input", required=True, help="official checkpoint file")
    parser.add_argument("--output", required=True, help="where to write the MODEL.WEIGHTS file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    if not os.path.isfile(args.input):
        raise UserError(f"no such checkpoint file: {args.input}")
    refuse_overwrite(args.output, [args.input, args.config_file])
    with torch.device("meta"):  # only shapes are needed: no memory for a weightless ViT-G
        backbone = build_backbone(cfg)
    try:
        state = load_official_checkpoint(args.input)
        converted, report = convert_official_checkpoint(state, backbone)
    except UserError as e:
        message = str(e) if args.input in str(e) else f"{args.input}: {e}"
        raise UserError(message) from None
    print(report.summary())
    out = {
        "model": {f"backbone.vit.{k}": v.contiguous() for k, v in converted.items()},
        "__author__": "rein_d2.convert_pretrained",
        "matching_heuristics": False,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_atomic(out, args.output)  # never a half-written file under the final name
    geometry = (f" (patch {backbone.patch_size}, image {backbone.img_size})"
                if hasattr(backbone, "patch_size") else "")
    print(f"wrote {len(converted)} tensors for {backbone.arch.timm_name}{geometry} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
