"""Build a model from a config and run one forward (and optionally backward) pass on CPU/GPU.

    python tools/forward_check.py --config-file configs/rein_dinov2.yaml [--size 512 1024]

Prints the trainable / frozen parameter counts, the backbone's feature shapes, the linked
queries and the time taken: a quick check that a config and its weights fit together.
"""
import argparse
import sys
import time

import torch
from detectron2.modeling import build_model

from rein_d2 import load_config
from rein_d2.engine import load_model_weights
from rein_d2.utils.cli import exit_on_user_error


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--backward", action="store_true", help="also time a backward pass")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    load_model_weights(cfg, model, inference=False)  # the VFM must come from a file
    backbone = model.backbone
    n_train = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in backbone.parameters() if not p.requires_grad)
    print(f"backbone {cfg.MODEL.BACKBONE.NAME} ({cfg.MODEL.VIT.SIZE}): "
          f"{n_train:,} trainable, {n_frozen:,} frozen parameters")

    x = torch.randn(1, 3, *args.size, device=model.device)
    model.train(args.backward)
    with torch.set_grad_enabled(args.backward):
        start = time.perf_counter()
        feats = backbone(x)
        forward_s = time.perf_counter() - start
        for name, f in feats.items():
            print(f"  {name}: {tuple(f.shape)}")
        queries = backbone.linked_queries()
        if queries is not None:
            print(f"  linked queries: {tuple(queries.shape)}")
        print(f"forward {args.size[0]}x{args.size[1]}: {forward_s:.2f} s")
        if args.backward:
            loss = sum(f.float().square().mean() for f in feats.values())
            if queries is not None:
                loss = loss + queries.square().mean()
            start = time.perf_counter()
            loss.backward()
            print(f"backward: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
