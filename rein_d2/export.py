"""A trained Rein model as a plain tensor-in, tensor-out module for export (ONNX, torch.export).

Input: one image normalised as the model expects ((pixel - PIXEL_MEAN) / PIXEL_STD, in the
config's INPUT.FORMAT channel order), [1, 3, H, W]. Output: the semantic logits [1, K, H, W] or
the label map [1, H, W] (int64). Whole-image inference pads the image to the backbone's
multiple inside the module; sliding windows follow the model's TEST.CROP_SIZE / STRIDE. The
module is exported at one image size (the position-table resize and the window grid depend on
it): export once per size you deploy.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .modeling.head import semantic_logits

__all__ = ["SemanticExport", "export_onnx", "export_program"]


class SemanticExport(nn.Module):
    """``model`` (a ReinMask2Former in eval mode) from a normalised image to semantic logits or
    labels. ``mode``: "whole" or "slide" (None: the model's TEST.MODE)."""

    def __init__(self, model: nn.Module, output: str = "logits", mode: str = None):
        super().__init__()
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got {output!r}")
        mode = mode or model.test_mode
        if mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
        self.model = model.eval()
        self.output = output
        self.mode = mode

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.mode == "slide":
            logits = self.model.slide_semantic(image[0])[None]
        else:
            h, w = image.shape[-2:]
            d = self.model.backbone.size_divisibility
            padded = F.pad(image, (0, (d - w % d) % d, 0, (d - h % d) % d))
            cls, masks = self.model.predict_logits(padded)
            logits = semantic_logits(cls[-1], masks[-1], padded.shape[-2:])[..., :h, :w]
        return logits.argmax(dim=1) if self.output == "labels" else logits


def export_program(module: SemanticExport, example: torch.Tensor):
    """A ``torch.export`` program of ``module`` at the example's size."""
    with torch.no_grad():
        return torch.export.export(module, (example,))


def export_onnx(module: SemanticExport, example: torch.Tensor, path: str, opset: int = 18):
    """An ONNX file of ``module`` at the example's size, through torch's exporter."""
    with torch.no_grad():
        torch.onnx.export(module, (example,), path, dynamo=True, opset_version=opset,
                          input_names=["image"], output_names=[module.output], verbose=False)
    return path
