"""Predict a registered split or an image folder into the benchmark servers' formats.

    python tools/predict.py --config-file configs/rein_dinov2.yaml --dataset cityscapes_rein_val \
        --format cityscapes --output output/cityscapes_val_pred MODEL.WEIGHTS weights/rein.pth
    python tools/predict.py --config-file configs/cityscapes_acdc/rein_dinov2_l_1024.yaml \
        --input datasets/acdc/rgb_anon --format acdc --output output/acdc_test_pred MODEL.WEIGHTS ...
    python tools/predict.py ... --input photos/ --format trainid --color output/photos_color

Formats (rein_d2/evaluation/submission.py): cityscapes (label ids, <city>/<city>_<seq>_<frame>_
leftImg8bit.png, as the Cityscapes server and cityscapesscripts expect), acdc (label ids, the
input's <condition>/<split>/<sequence>/ layout and names, as the ACDC server asks), bdd100k and
trainid (train ids, 255 = ignore). Each image is predicted at its dataset's evaluation size
(metadata eval_size; for a folder, that of DATASETS.TEST[0]; TEST.EVAL_SIZE "(W, H)" overrides
it) and written at its own size.

Resumable: images whose prediction exists are skipped (files are written under a temporary
name, checked to decode, then renamed), so rerun the same command after an interruption or a
full disk. Inputs are never written over: an --output or --color folder that holds the inputs,
and two inputs that would share a prediction's name (x.png and x.jpg), are refused. An image
that cannot be read is named and skipped; the exit status is then 2.
"""
import argparse
import os
import sys

import tqdm
from detectron2.data import MetadataCatalog, build_detection_test_loader

from rein_d2 import load_config
from rein_d2.data.datasets.common import dataset_dicts_checked
from rein_d2.evaluation import DGTestMapper
from rein_d2.evaluation.protocol import eval_size_of
from rein_d2.evaluation.submission import FORMATS, plan_predictions, prediction_done, write_prediction
from rein_d2.predictor import Predictor
from rein_d2.utils.cli import EXIT_REFUSED, UserError, exit_on_user_error, one_line
from rein_d2.utils.files import IMAGE_EXTENSIONS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config-file", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a registered split (its images; labels unused)")
    source.add_argument("--input", help="a folder of images (searched recursively)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--output", required=True, help="folder of the predictions")
    parser.add_argument("--color", metavar="DIR", help="also write coloured PNGs there (the dataset's "
                        "class colours; Cityscapes' without one)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per model call")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def class_colors(args, cfg):
    """The colours of --color: those of --dataset, else of DATASETS.TEST[0], else Cityscapes'."""
    name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    return MetadataCatalog.get(name).get("stuff_colors", None) if name else None


def list_inputs(args, cfg):
    """(dataset dicts with file_name, the root they are relative to, the evaluation size)."""
    if args.dataset:
        dicts = dataset_dicts_checked(args.dataset)
        meta = MetadataCatalog.get(args.dataset)
        root = meta.get("image_root", None) or os.path.commonpath([d["file_name"] for d in dicts])
        return [{"file_name": d["file_name"]} for d in dicts], root, eval_size_of(cfg, args.dataset)[0]
    if not os.path.isdir(args.input):
        raise UserError(f"--input {args.input} is not a folder of images")
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(args.input) for f in fs
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"--input {args.input} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    size = (eval_size_of(cfg, cfg.DATASETS.TEST[0])[0] if cfg.DATASETS.TEST
            else tuple(cfg.TEST.EVAL_SIZE) or None)
    return [{"file_name": f} for f in files], args.input, size


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    dicts, root, eval_size = list_inputs(args, cfg)
    plan = plan_predictions(args.format, [d["file_name"] for d in dicts], root, args.output, args.color)
    for d, (_, out, color) in zip(dicts, plan):
        d.update(out=out, color=color)
    todo = [d for d in dicts if not prediction_done(d["out"])]
    print(f"{len(dicts)} images, {len(dicts) - len(todo)} already predicted in {args.output}, "
          f"{len(todo)} to predict ({args.format} format)")
    if not todo:
        return 0
    # MODEL.WEIGHTS (+ MODEL.TRAINED_WEIGHTS): all or refused; images at the evaluation size
    predictor = Predictor(cfg, resize=eval_size)
    loader = build_detection_test_loader(todo, mapper=_Mapper(cfg.INPUT.FORMAT, eval_size),
                                         batch_size=args.batch_size,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    unreadable = []
    colors = class_colors(args, cfg)
    with tqdm.tqdm(total=len(todo), unit="img") as bar:
        for batch in loader:
            bad = [d["unreadable"] for d in batch if "unreadable" in d]
            for message in bad:
                tqdm.tqdm.write(f"error: {message}; skipped", file=sys.stderr)
            unreadable += bad
            batch = [d for d in batch if "unreadable" not in d]
            for d, prediction in zip(batch, predictor.predict_inputs(batch) if batch else []):
                write_prediction(args.format, prediction.labels, d["out"], d["color"], colors)
            bar.update(len(batch) + len(bad))
    print(f"wrote {len(todo) - len(unreadable)} prediction(s) to {args.output}")
    if unreadable:
        print(f"{len(unreadable)} image(s) could not be read, each named above: replace them "
              "and rerun", file=sys.stderr)
        return EXIT_REFUSED
    return 0


class _Mapper(DGTestMapper):
    """The DG test mapper (image at the evaluation size), keeping the output paths."""

    def __call__(self, d):
        try:
            out = super().__call__(d)
        except (OSError, UserError) as e:  # a damaged image: named, skipped, the rest predicted
            return {"unreadable": one_line(e)}
        out.update(out=d["out"], color=d["color"])
        return out


if __name__ == "__main__":
    sys.exit(main())
