"""Instance segmentation dataset mapper for detectron2's COCO-format instance datasets (dicts
from ``load_coco_json``, with polygon or RLE "segmentation")."""
import copy
from typing import List, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from detectron2.structures.masks import polygons_to_bitmask
from PIL import Image

from ...utils.cli import UserError

__all__ = ["InstanceDatasetMapper", "build_instance_augmentation", "read_image_checked"]


def build_instance_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """Training: short-side resize (INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN / sampling), the
    optional INPUT.CROP and INPUT.RANDOM_FLIP. Testing: resize to INPUT.MIN_SIZE_TEST (0 = none)."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                 cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs


# Pillow modes of 16- and 32-bit greyscale images (16-bit PNG / TIFF): Pillow's own conversion
# to RGB clips them at 255, so a 16-bit photo would be read as a white image.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_image_checked(path: str, fmt=None) -> np.ndarray:
    """detectron2's read_image (EXIF orientation, then ``fmt``: "BGR", "RGB", "L" ... or None
    for the stored values), with the path in the error when the file cannot be read. A 16-bit
    greyscale image read as a picture (``fmt`` given) is scaled to 8 bits (v * 255 / 65535);
    a floating-point one is refused. Labels (``fmt`` None) keep their stored values."""
    try:
        with Image.open(path) as img:
            img = utils._apply_exif_orientation(img)
            if fmt is not None and img.mode == "F":
                raise UserError(f"{path}: a floating-point image (Pillow mode F); convert it to "
                                "8-bit (or 16-bit) PNG or JPEG first")
            if fmt is not None and img.mode in _WIDE_GREY:
                wide = np.asarray(img).astype(np.int64)
                img = Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), "L")
            return utils.convert_PIL_to_numpy(img, fmt)
    except UserError:
        raise
    except Exception as e:  # missing, truncated or not an image
        raise OSError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def _rasterize(segm, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):  # polygons
        return polygons_to_bitmask(segm, h, w).astype(np.uint8)
    if isinstance(segm, dict):  # RLE; load_coco_json has already compressed list counts
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, h, w)
        return mask_util.decode(segm).astype(np.uint8)
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


class InstanceDatasetMapper:
    """Maps an instance dataset dict to the model's input: "image" (CHW float32, 0..255 in
    INPUT.FORMAT) and, in training, "instances" with gt_classes, gt_masks (BitMasks) and
    gt_boxes (tight around the masks). Crowd annotations are dropped, and so are instances
    left empty by the augmentation. Padding is left to the model.

    Masks are rasterised at the original size and go through the same transforms as the image
    (nearest neighbour), so any augmentation works on polygons and RLE alike.
    Testing returns the image resized to INPUT.MIN_SIZE_TEST with the dict's "height"/"width"
    (the original size the model resizes its outputs to), "file_name" and "image_id".
    """

    # Dataset keys that describe the ground truth; dropped from the returned dict.
    annotation_keys = ("annotations", "sem_seg_file_name")

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format, num_classes):
        """
        Args:
            augmentations: detectron2 augmentations for image and masks.
            image_format: format for :func:`detectron2.data.detection_utils.read_image`.
            num_classes: the model's classes; category ids must lie in 0..num_classes-1.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_instance_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)  # the dataset's dicts are reused every epoch
        image = read_image_checked(d["file_name"], self.image_format)
        utils.check_image_size(d, image)
        if self.is_train:
            masks, classes = self._masks_and_classes(d, image.shape[:2])
        for k in self.annotation_keys:
            d.pop(k, None)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        if self.is_train:
            masks = [transforms.apply_segmentation(m) for m in masks]
            d["instances"] = self._instances(masks, classes, image.shape[:2])
        return d

    def _masks_and_classes(self, d, size) -> Tuple[List[np.ndarray], List[int]]:
        """Uint8 masks at the original size and the classes of the non-crowd annotations."""
        if "annotations" not in d:
            raise ValueError(f"training needs 'annotations' for {d['file_name']}")
        masks, classes = [], []
        for a in d["annotations"]:
            if a.get("iscrowd", 0):
                continue
            if "segmentation" not in a:
                raise ValueError(f"an annotation of {d['file_name']} has no 'segmentation'")
            masks.append(_rasterize(a["segmentation"], *size))
            classes.append(self._checked_class(a["category_id"], d["file_name"]))
        return masks, classes

    def _checked_class(self, category_id, source: str) -> int:
        c = int(category_id)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"{source}: category_id {c} outside the model's classes "
                             f"0..{self.num_classes - 1} (MODEL.SEM_SEG_HEAD.NUM_CLASSES)")
        return c

    @staticmethod
    def _instances(masks: List[np.ndarray], classes: List[int], size) -> Instances:
        instances = Instances(size)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        stacked = (torch.from_numpy(np.stack(masks)).bool() if masks
                   else torch.zeros((0, *size), dtype=torch.bool))
        instances.gt_masks = BitMasks(stacked)
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        return instances[instances.gt_masks.nonempty()]
