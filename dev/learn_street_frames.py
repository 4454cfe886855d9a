"""End-to-end learning check: train a small Rein model on real labelled street frames and
report the mIoU it reaches on them.

    python tools/learn_street_frames.py --config-file configs/misc/street_frames_dinov2_s.yaml

The frames are the five per-pixel labelled video frames (background / car / truck) of
Debian's ``labelme-examples`` package, in the VOC layout its labelme2voc script writes
(JPEGImages/*.jpg, SegmentationClassPNG/*.png holding class indices). Nothing is downloaded.
The VFM starts from random weights (no pretrained file exists here), so this shows that the
whole path - Rein, pixel decoder, query decoder, matcher, losses, inference - learns.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from PIL import Image

from rein_d2 import load_config

FRAMES = Path("/usr/share/doc/labelme-examples/examples/video_annotation/data_dataset_voc")


def load_frames(root: Path):
    """[(image uint8 HxWx3, label int64 HxW)] from a labelme2voc folder, with clear errors."""
    images = sorted((root / "JPEGImages").glob("*.jpg"))
    if not images:
        raise FileNotFoundError(
            f"no frames under {root}/JPEGImages: install Debian's labelme-examples "
            "(apt-get install labelme-examples) or pass --frames-dir")
    frames = []
    for path in images:
        label_path = root / "SegmentationClassPNG" / (path.stem + ".png")
        if not label_path.exists():
            raise FileNotFoundError(f"{path} has no label {label_path}")
        image = np.asarray(Image.open(path).convert("RGB"))
        label = np.asarray(Image.open(label_path)).astype(np.int64)  # palette indices = classes
        if image.shape[:2] != label.shape:
            raise ValueError(f"{path} is {image.shape[:2]} but {label_path} is {label.shape}")
        frames.append((image, label))
    return frames


def to_input(image, label, size, flip=False):
    """Resize to ``size`` (W, H): image bilinear, label nearest; optional horizontal flip."""
    w, h = size
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float()[None]  # PIL arrays are read-only
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]
    y = torch.from_numpy(label)[None, None].float()
    y = F.interpolate(y, size=(h, w), mode="nearest")[0, 0].long()
    if flip:
        x, y = x.flip(-1), y.flip(-1)
    return {"image": x, "sem_seg": y, "height": label.shape[0], "width": label.shape[1]}


def confusion(model, frames, size, num_classes):
    """Confusion matrix over the frames, predicted at ``size`` and scored at label size."""
    model.eval()
    hist = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.no_grad():
        for image, label in frames:
            item = to_input(image, label, size)
            del item["sem_seg"]
            pred = model([item])[0]["sem_seg"].argmax(0).numpy()
            hist += np.bincount(num_classes * label.ravel() + pred.ravel(),
                                minlength=num_classes ** 2).reshape(num_classes, num_classes)
    model.train()
    return hist


def iou_from(hist):
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return 100 * iou


def train(cfg, frames, size, max_iter, time_budget, batch_size, eval_period, target, log=print,
          stop_after=None):
    """Train until ``target`` mIoU, ``max_iter`` or ``time_budget`` seconds; return a summary.
    ``stop_after`` ends the run after that many iterations (the schedule still spans
    ``max_iter``): a bound in iterations gives the same result on a fast or a busy machine."""
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    rng = np.random.default_rng(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    start = time.perf_counter()
    history, best = [], {"miou": -1.0}
    it = 0
    while it < min(max_iter, stop_after or max_iter):
        for group in opt.param_groups:  # poly schedule, power 0.9, as the reference
            group["lr"] = cfg.SOLVER.BASE_LR * (1 - it / max_iter) ** 0.9
        picks = rng.choice(len(frames), size=batch_size, replace=False)
        batch = [to_input(*frames[i], size, flip=bool(rng.random() < 0.5)) for i in picks]
        losses = model(batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {it}: "
                                     f"{ {k: v.item() for k, v in losses.items()} }")
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
        elapsed = time.perf_counter() - start
        if it % eval_period == 0 or it in (max_iter, stop_after) or elapsed > time_budget:
            iou = iou_from(confusion(model, frames, size, num_classes))
            miou = float(np.nanmean(iou))
            elapsed = time.perf_counter() - start
            history.append({"iter": it, "loss": loss.item(), "miou": miou, "seconds": elapsed})
            log(f"iter {it:4d}  loss {loss.item():7.3f}  mIoU {miou:5.1f}  "
                f"IoU {np.round(iou, 1).tolist()}  {elapsed:6.0f} s")
            if miou > best["miou"]:
                best = {"iter": it, "miou": miou, "iou": iou.tolist(), "seconds": elapsed}
            if miou >= target or elapsed > time_budget:
                break
    return {"best": best, "history": history, "iterations": it,
            "seconds": time.perf_counter() - start, "reached_target": best["miou"] >= target}


def build_cfg(config_file, opts=()):
    return load_config(config_file, opts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/misc/street_frames_dinov2_s.yaml")
    parser.add_argument("--frames-dir", type=Path, default=FRAMES)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 288), metavar=("W", "H"))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--eval-period", type=int, default=25)
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of training")
    parser.add_argument("--target", type=float, default=70.0, help="stop once mIoU reaches it")
    parser.add_argument("--output", type=Path, help="write the summary as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = build_cfg(args.config_file, args.opts)
    frames = load_frames(args.frames_dir)
    summary = train(cfg, frames, tuple(args.size), cfg.SOLVER.MAX_ITER, args.time_budget,
                    args.batch_size, args.eval_period, args.target)
    best = summary["best"]
    print(f"best mIoU {best['miou']:.1f} at iteration {best['iter']} "
          f"after {best['seconds']:.0f} s (target {args.target}: "
          f"{'reached' if summary['reached_target'] else 'NOT reached'})")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2))
    return 0 if summary["reached_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
