"""Export a trained Rein model for inference without detectron2: ONNX and/or torch.export.

    python tools/export_model.py --config-file configs/rein_dinov2.yaml --size 512 1024 \
        --format onnx torch_export --output output/export/rein MODEL.WEIGHTS weights/rein.pth

Writes <output>.onnx (run it with onnxruntime; its weights are in <output>.onnx.data beside it)
and/or <output>.pt2 (torch.export.load). The
exported model takes one normalised image [1, 3, H, W] ((pixel - MODEL.PIXEL_MEAN) /
MODEL.PIXEL_STD, INPUT.FORMAT channel order) at the --size given, and returns the semantic
logits [1, K, H, W] or, with --labels, the label map [1, H, W]. --mode whole / slide (default:
the config's MODEL.MASK2FORMER.TEST.MODE) picks whole-image or sliding-window inference.

Each export is run on the same random image as the PyTorch model and the largest difference is
printed; above --tolerance the export is not kept and the tool exits with status 2. Files are
written in a temporary folder beside the output and renamed into place once checked, so an
interrupted or failed export never leaves a broken file over a good earlier one; an --output
that would write over the config or the weights is refused.
"""
import argparse
import os
import sys

import numpy as np
import torch
from detectron2.modeling import build_model

from rein_d2 import load_config
from rein_d2.engine import load_model_weights
from rein_d2.export import SemanticExport, export_onnx, export_program
from rein_d2.utils.cli import UserError, exit_on_user_error, refuse_overwrite
from rein_d2.utils.files import staged_files

# format -> the files it writes (the main file first, then its companions)
SUFFIXES = {"onnx": (".onnx", ".onnx.data"), "torch_export": (".pt2",)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="path without suffix")
    parser.add_argument("--size", nargs=2, type=int, required=True, metavar=("H", "W"))
    parser.add_argument("--format", nargs="+", default=["onnx", "torch_export"],
                        choices=["onnx", "torch_export"])
    parser.add_argument("--mode", choices=["whole", "slide"], default=None)
    parser.add_argument("--labels", action="store_true", help="output the label map, not logits")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted difference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def run_onnx(path: str, image: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    # eager modules: the exporters trace the model themselves
    cfg = load_config(args.config_file, args.opts + ["MODEL.DEVICE", "cpu", "MODEL.COMPILE", ""])
    refuse_overwrite([args.output + s for fmt in args.format for s in SUFFIXES[fmt]],
                     [args.config_file, cfg.MODEL.WEIGHTS, cfg.MODEL.TRAINED_WEIGHTS])
    model = build_model(cfg).eval()
    load_model_weights(cfg, model)  # MODEL.WEIGHTS (+ MODEL.TRAINED_WEIGHTS); all or refused
    module = SemanticExport(model, "labels" if args.labels else "logits", args.mode)
    image = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = module(image)
    folder, base = os.path.split(os.path.abspath(args.output))
    for fmt in args.format:
        names = [base + s for s in SUFFIXES[fmt]]
        with staged_files(folder, names) as stage:  # renamed into place at the end of the block
            path = os.path.join(stage, names[0])
            if fmt == "onnx":
                export_onnx(module, image, path)
                out = torch.from_numpy(run_onnx(path, image))
            else:
                torch.export.save(export_program(module, image), path)
                with torch.no_grad():
                    out = torch.export.load(path).module()(image)
            diff = float((out.double() - reference.double()).abs().max())
            made = [n for n in names if os.path.exists(os.path.join(stage, n))]
            size = sum(os.path.getsize(os.path.join(stage, n)) for n in made)
            if diff > args.tolerance:
                raise UserError(f"the {fmt} export differs from the PyTorch model by {diff:.3g} (> "
                                f"--tolerance {args.tolerance:g}); it was not kept")
        data = f" with its weights in {made[1]}" if len(made) > 1 else ""
        print(f"{fmt}: wrote {args.output + SUFFIXES[fmt][0]}{data} ({size / 2**20:.1f} MiB); "
              f"{module.mode} {module.output} at {args.size[0]}x{args.size[1]}; largest "
              f"difference to PyTorch {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
