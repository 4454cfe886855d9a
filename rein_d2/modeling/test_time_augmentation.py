"""Test-time augmentation for semantic segmentation: each image at several short-side sizes
(and mirrored), the wrapped model's class-score maps un-flipped and averaged."""
from typing import Dict, List

import torch
from detectron2.modeling import DatasetMapperTTA
from fvcore.transforms import HFlipTransform, VFlipTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a semantic segmentor with TEST.AUG.{MIN_SIZES, MAX_SIZE, FLIP}; called like the
    model in inference. The model's own inference mode (whole / slide) is used unchanged; it
    must return "sem_seg" [K, height, width] at the "height"/"width" of its input dict, so the
    augmented outputs only need un-flipping before they are averaged."""

    def __init__(self, cfg, model, tta_mapper=None, batch_size=1):
        """
        Args:
            cfg: the config (TEST.AUG.* builds the default ``tta_mapper``).
            model: the segmentor.
            tta_mapper: input dict -> list of augmented dicts, each with "transforms";
                defaults to detectron2's ``DatasetMapperTTA(cfg)``.
            batch_size: augmented images per model call.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        return [self._inference_one_image(x) for x in batched_inputs]

    def _inference_one_image(self, x: Dict) -> Dict:
        x = dict(x)
        x.setdefault("height", x["image"].shape[-2])
        x.setdefault("width", x["image"].shape[-1])
        augmented = self.tta_mapper(x)
        total = None
        with torch.no_grad():
            for i in range(0, len(augmented), self.batch_size):
                chunk = augmented[i:i + self.batch_size]
                transforms = [a.pop("transforms") for a in chunk]
                for tfms, out in zip(transforms, self.model(chunk)):
                    seg = _unflip(out["sem_seg"], tfms)
                    total = seg if total is None else total + seg
        return {"sem_seg": total / len(augmented)}


def _unflip(seg: torch.Tensor, transforms) -> torch.Tensor:
    # Outputs are already at the original size; flips are the only geometry left to undo.
    for t in transforms.transforms:
        if isinstance(t, HFlipTransform):
            seg = seg.flip(-1)
        elif isinstance(t, VFlipTransform):
            seg = seg.flip(-2)
    return seg
