"""Semantic segmentation dataset mapper with the reference (mmseg) training augmentation
(docs/method.md section 5): a random short side from a set (max size kept) resized with OpenCV, a
random crop in which no class covers too much of the labelled area, horizontal flip, photometric
distortion, and padding to the crop size. Each step draws from numpy's global RNG what mmseg's
draws, in the same order, so a seed gives the reference's boxes, flips and colours."""
import copy

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from fvcore.transforms.transform import CropTransform, NoOpTransform, Transform

from ...utils.cli import UserError
from .instance import read_image_checked

__all__ = [
    "CategoryAreaCrop",
    "CV2ResizeTransform",
    "PhotometricDistortion",
    "PhotometricDistortionTransform",
    "SemanticDatasetMapper",
    "ResizeShortestEdgeCV2",
    "build_semantic_train_augmentation",
]


class CV2ResizeTransform(Transform):
    """Resize to (new_h, new_w) with ``cv2.resize`` as mmcv's imresize does: bilinear for images,
    nearest for labels."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)
        return out.reshape(out.shape[:2] + img.shape[2:])  # OpenCV drops a single channel axis

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return cv2.resize(segmentation, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h / self.h)
        return coords


def mmcv_rescaled_size(h: int, w: int, target_h: int, target_w: int):
    """The size mmcv's imrescale gives an h x w image for a keep-ratio target: the largest factor
    that fits it in (target long side, target short side), each side rounded as int(x + 0.5).
    mmseg's ResizeShortestEdge rounds its target first, so a side can differ from it by one."""
    factor = min(max(target_h, target_w) / max(h, w), min(target_h, target_w) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


class ResizeShortestEdgeCV2(T.ResizeShortestEdge):
    """mmseg's RandomChoiceResize(resize_type="ResizeShortestEdge", max_size): detectron2's
    ResizeShortestEdge draws the short side as the reference does (one ``randint`` over the
    set) and rounds the same target; mmcv's imrescale then sets the size and OpenCV resizes."""

    def get_transform(self, image):
        t = super().get_transform(image)
        if isinstance(t, NoOpTransform):
            return t
        return CV2ResizeTransform(t.h, t.w, *mmcv_rescaled_size(t.h, t.w, t.new_h, t.new_w))


def _class_counts(label: np.ndarray, ignore):
    if label.dtype == np.uint8:  # a histogram is ~10x faster than np.unique on a crop
        counts = np.bincount(label.ravel(), minlength=256)
        labels = np.flatnonzero(counts)
        counts = counts[labels]
    else:
        labels, counts = np.unique(label, return_counts=True)
    return counts[labels != ignore] if ignore is not None else counts


class CategoryAreaCrop(T.RandomCrop_CategoryAreaConstraint):
    """mmseg's RandomCrop(crop_size, cat_max_ratio, ignore_index): a box is drawn (top, then
    left offset); it is kept if it holds more than one class (ignore excluded) and the largest
    class covers less than the ratio, else a new box is drawn: 10 boxes are checked, and when
    all fail an 11th is drawn and kept unchecked (detectron2's version keeps the 10th)."""

    def get_transform(self, image, sem_seg):
        if self.single_category_max_area >= 1.0:
            return self.crop_aug.get_transform(image)
        h, w = sem_seg.shape
        ch, cw = self.crop_aug.get_crop_size((h, w))

        def draw():
            return np.random.randint(h - ch + 1), np.random.randint(w - cw + 1)

        y0, x0 = draw()
        for _ in range(10):
            counts = _class_counts(sem_seg[y0:y0 + ch, x0:x0 + cw], self.ignored_category)
            if len(counts) > 1 and counts.max() / counts.sum() < self.single_category_max_area:
                break
            y0, x0 = draw()
        return CropTransform(x0, y0, cw, ch)


def _scale_shift(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # As mmseg: float32 arithmetic, clip to 0..255, truncate back to uint8 after every step.
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class PhotometricDistortionTransform(Transform):
    """mmseg's PhotoMetricDistortion with its random draws fixed; None skips a step.

    Order: brightness, contrast (if ``contrast_first``), saturation, hue, contrast (otherwise).
    Saturation and hue each go through OpenCV's 8-bit HSV (H in 0..179) and back, as there.
    Labels and coordinates are left unchanged.
    """

    def __init__(self, brightness=None, contrast=None, contrast_first=False, saturation=None,
                 hue=None, rgb=True):
        super().__init__()
        self._set_attributes(locals())

    def _through_hsv(self, img, edit):
        to_hsv, from_hsv = ((cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB) if self.rgb
                            else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR))
        hsv = cv2.cvtColor(img, to_hsv)
        edit(hsv)
        return cv2.cvtColor(hsv, from_hsv)

    def _set_saturation(self, hsv):
        hsv[..., 1] = _scale_shift(hsv[..., 1], alpha=self.saturation)

    def _set_hue(self, hsv):
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + self.hue) % 180

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = np.clip(img, 0, 255).astype(np.uint8)
        if self.brightness is not None:
            img = _scale_shift(img, beta=self.brightness)
        if self.contrast_first and self.contrast is not None:
            img = _scale_shift(img, alpha=self.contrast)
        colour = img.ndim == 3 and img.shape[2] == 3  # HSV steps need three channels
        if colour and self.saturation is not None:
            img = self._through_hsv(img, self._set_saturation)
        if colour and self.hue is not None:
            img = self._through_hsv(img, self._set_hue)
        if not self.contrast_first and self.contrast is not None:
            img = _scale_shift(img, alpha=self.contrast)
        return img

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation


class PhotometricDistortion(T.Augmentation):
    """Draws :class:`PhotometricDistortionTransform`'s parameters, each step with probability
    0.5, from numpy's global RNG in the order mmseg draws them (same seed, same parameters)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18, rgb=True):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        rng = np.random

        def maybe_uniform(low, high):
            return rng.uniform(low, high) if rng.randint(2) else None

        brightness = maybe_uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = rng.randint(2) == 1
        contrast = maybe_uniform(*self.contrast_range) if contrast_first else None
        saturation = maybe_uniform(*self.saturation_range)
        # numpy's high bound is exclusive: hue shifts lie in [-delta, delta - 1] as in mmseg.
        hue = int(rng.randint(-self.hue_delta, self.hue_delta)) if rng.randint(2) else None
        if not contrast_first:
            contrast = maybe_uniform(*self.contrast_range)
        return PhotometricDistortionTransform(brightness, contrast, contrast_first, saturation,
                                              hue, self.rgb)


def build_semantic_train_augmentation(cfg):
    """The training augmentations from the config: short-side resize, category-constrained
    crop, flip, photometric distortion (INPUT.* keys), each as mmseg's."""
    augs = [ResizeShortestEdgeCV2(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                  cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(CategoryAreaCrop(
            cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
            cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    if cfg.INPUT.COLOR_AUG_SSD:
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise UserError(f"INPUT.COLOR_AUG_SSD needs INPUT.FORMAT RGB or BGR, "
                             f"not {cfg.INPUT.FORMAT!r}")
        augs.append(PhotometricDistortion(rgb=cfg.INPUT.FORMAT == "RGB"))
    return augs


def _read_label(path):
    label = read_image_checked(path)  # no format conversion: palette indices stay class ids
    if label.ndim != 2:
        raise UserError(f"label {path} has shape {label.shape}; expected a single-channel "
                         f"map of class ids")
    if label.min() >= 0 and label.max() <= 255:
        return label.astype(np.uint8)
    return label.astype(np.float32)  # OpenCV resizes float32 maps (nearest is exact); not int64


def _values_present(label):
    if label.dtype == np.uint8:  # a histogram is ~10x faster than np.unique on a full frame
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def check_label_values(label, path, num_classes, ignore_value):
    """Refuse a label holding values that are neither a class nor ignore, listing only those
    values (the model would otherwise fail later naming no file)."""
    values = _values_present(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_value)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise UserError(f"label {path} holds values {shown} outside the classes 0..{num_classes - 1} "
                         f"and ignore {ignore_value}: run the dataset's preparation script "
                         f"(datasets/README.md) or fix MODEL.SEM_SEG_HEAD.NUM_CLASSES")


def check_label_size(image, label, image_path, label_path):
    if label.shape[:2] != image.shape[:2]:
        raise UserError(
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} but its image {image_path} "
            f"is {image.shape[1]}x{image.shape[0]} (W x H): a label must be the image's size; "
            f"replace the pair, or rerun the dataset's preparation script (datasets/README.md)")


class SemanticDatasetMapper:
    """Maps a semantic dataset dict ({"file_name", "sem_seg_file_name", "height"?, "width"?})
    to the model's input: "image" (CHW float32, 0..255, INPUT.FORMAT channel order) and
    "sem_seg" (HW long), with "height"/"width" of the original image.

    Training applies ``augmentations`` and pads the image and label bottom/right to
    ``pad_size``. Testing returns the image unresized (the model resizes its output to
    "height"/"width") and the label, when the dict names one, unchanged.
    """

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format, ignore_value=255,
                 pad_size=None, image_pad_value=0.0, num_classes=None):
        """
        Args:
            augmentations: detectron2 augmentations applied to image and label (training).
            image_format: format for :func:`detectron2.data.detection_utils.read_image`.
            ignore_value: label value of padded pixels.
            pad_size: (h, w) padded to in training, or None.
            image_pad_value: image value of padded pixels (a scalar or one per channel).
            num_classes: labels may hold only 0..num_classes-1 and ignore_value (None: no check).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_value = ignore_value
        self.pad_size = tuple(pad_size) if pad_size else None
        self.image_pad_value = image_pad_value
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train=True):
        crop = cfg.INPUT.CROP
        fixed_crop = is_train and crop.ENABLED and crop.TYPE == "absolute"
        return {
            "is_train": is_train,
            "augmentations": build_semantic_train_augmentation(cfg) if is_train else [],
            "image_format": cfg.INPUT.FORMAT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "pad_size": tuple(crop.SIZE) if fixed_crop else None,
            # The reference pads after normalising, with 0: the pixel mean before it.
            "image_pad_value": tuple(cfg.MODEL.PIXEL_MEAN),
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)  # the dataset's dicts are reused every epoch
        image = read_image_checked(d["file_name"], self.image_format)
        utils.check_image_size(d, image)
        label = None
        if "sem_seg_file_name" in d:
            label = _read_label(d["sem_seg_file_name"])
            check_label_size(image, label, d["file_name"], d["sem_seg_file_name"])
            if self.is_train and self.num_classes is not None:  # before the loss needs them
                check_label_values(label, d["sem_seg_file_name"], self.num_classes,
                                   self.ignore_value)
        elif self.is_train:
            raise UserError(f"training needs 'sem_seg_file_name' for {d['file_name']}")

        if self.is_train:
            aug_input = T.AugInput(image, sem_seg=label)
            self.augmentations(aug_input)
            image, label = aug_input.image, aug_input.sem_seg

        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        if label is not None:
            label = torch.as_tensor(label.astype(np.int64))
        if self.is_train and self.pad_size is not None:
            image, label = self._pad(image, label)
        d["image"] = image
        if label is not None:
            d["sem_seg"] = label
        return d

    def _pad(self, image, label):
        c, h, w = image.shape
        ph, pw = max(self.pad_size[0], h), max(self.pad_size[1], w)
        fill = torch.as_tensor(self.image_pad_value, dtype=image.dtype).reshape(-1, 1, 1)
        padded = fill.expand(c, ph, pw).clone()
        padded[:, :h, :w] = image
        padded_label = torch.full((ph, pw), self.ignore_value, dtype=torch.long)
        padded_label[:h, :w] = label
        return padded, padded_label
