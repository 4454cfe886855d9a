"""Panoptic segmentation dataset mapper for detectron2's COCO panoptic datasets (dicts from
``load_coco_panoptic_json`` / ``register_coco_panoptic``: "pan_seg_file_name", "segments_info"
with contiguous category ids)."""
from typing import List, Tuple

import numpy as np

from .instance import InstanceDatasetMapper, read_image_checked

__all__ = ["PanopticDatasetMapper", "rgb2id"]


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours [H, W, 3] -> segment ids R + 256 G + 256^2 B [H, W]."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


class PanopticDatasetMapper(InstanceDatasetMapper):
    """As :class:`InstanceDatasetMapper`, with one training instance per non-crowd segment of
    the panoptic PNG (things and stuff alike): gt_classes = the segment's category_id."""

    annotation_keys = ("segments_info", "pan_seg_file_name", "sem_seg_file_name")

    def _masks_and_classes(self, d, size) -> Tuple[List[np.ndarray], List[int]]:
        if "pan_seg_file_name" not in d or "segments_info" not in d:
            raise ValueError(f"training needs 'pan_seg_file_name' and 'segments_info' for {d['file_name']}")
        path = d["pan_seg_file_name"]
        ids = rgb2id(read_image_checked(path, "RGB"))
        if ids.shape != tuple(size):
            raise ValueError(f"image {d['file_name']} is {size[1]}x{size[0]} but its panoptic "
                             f"map {path} is {ids.shape[1]}x{ids.shape[0]} (w x h)")
        masks, classes = [], []
        for s in d["segments_info"]:
            if s.get("iscrowd", 0):
                continue
            masks.append((ids == s["id"]).astype(np.uint8))
            classes.append(self._checked_class(s["category_id"], path))
        return masks, classes
