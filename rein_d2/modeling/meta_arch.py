"""ReinMask2Former: a detectron2 meta-architecture joining a backbone (with Rein's linked
queries when it has them), the deformable-attention pixel decoder and the masked-attention
query decoder. It trains from semantic label maps or from instances (instance and panoptic
datasets) and predicts any of semantic, instance and panoptic segmentation.
"""
import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from torch import nn

from .head import (MSDeformAttnPixelDecoder, QueryDecoder, SetCriterion, instance_inference,
                   panoptic_inference, semantic_logits)

__all__ = ["ReinMask2Former"]

COMPILE_BACKEND = "inductor"  # torch.compile's backend for MODEL.COMPILE (tests trace with aot_eager)


@META_ARCH_REGISTRY.register()
class ReinMask2Former(nn.Module):
    @configurable
    def __init__(self, *, backbone: nn.Module, pixel_decoder: MSDeformAttnPixelDecoder,
                 predictor: QueryDecoder, criterion: SetCriterion, in_features: List[str],
                 num_classes: int, ignore_value: int, pixel_mean, pixel_std,
                 semantic_on: bool = True, instance_on: bool = False, panoptic_on: bool = False,
                 object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                 test_topk: int = 100, metadata=None, test_mode: str = "whole",
                 crop_size=(512, 512), stride=(341, 341), crop_batch_size: int = 8,
                 test_autocast: str = "", compile_mode: str = ""):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.criterion = criterion
        self.in_features = in_features
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on, self.instance_on, self.panoptic_on = semantic_on, instance_on, panoptic_on
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.test_topk = test_topk
        self.metadata = metadata  # thing classes for panoptic inference
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"MODEL.MASK2FORMER.TEST.MODE must be 'whole' or 'slide', got {test_mode!r}")
        if test_mode == "slide" and (instance_on or panoptic_on):
            raise ValueError("sliding-window inference predicts semantic segmentation only: set "
                             "MODEL.MASK2FORMER.TEST.MODE 'whole' for instance / panoptic outputs")
        self.test_mode = test_mode
        self.crop_size, self.stride = tuple(crop_size), tuple(stride)
        self.crop_batch_size = crop_batch_size
        self.test_autocast = getattr(torch, test_autocast) if test_autocast else None
        if compile_mode:
            # In place (nn.Module.compile): parameter names, checkpoints and DDP stay as eager.
            # The criterion stays eager: the Hungarian matching runs in scipy.
            for module in (self.backbone, self.pixel_decoder, self.predictor):
                module.compile(mode=compile_mode, backend=COMPILE_BACKEND)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        m = cfg.MODEL.MASK2FORMER
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        shapes = backbone.output_shape()
        linked = getattr(backbone, "linked_queries", lambda: None)() is not None
        if linked and cfg.MODEL.REIN.QUERY_DIM != m.HIDDEN_DIM:
            raise ValueError(f"MODEL.REIN.QUERY_DIM ({cfg.MODEL.REIN.QUERY_DIM}) must equal "
                             f"MODEL.MASK2FORMER.HIDDEN_DIM ({m.HIDDEN_DIM}) for linked queries")
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        datasets = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
        return dict(
            backbone=backbone,
            pixel_decoder=MSDeformAttnPixelDecoder(
                in_channels=[shapes[f].channels for f in in_features],
                strides=[shapes[f].stride for f in in_features], feat_channels=m.HIDDEN_DIM,
                out_channels=m.HIDDEN_DIM, num_layers=m.ENC_LAYERS, num_heads=m.NHEADS,
                num_points=m.ENC_POINTS, ffn_dim=m.ENC_DIM_FEEDFORWARD,
                recompute_sampling=m.ENC_RECOMPUTE_SAMPLING),
            predictor=QueryDecoder(
                num_classes=num_classes, dim=m.HIDDEN_DIM, num_queries=m.NUM_QUERIES,
                num_heads=m.NHEADS, num_layers=m.DEC_LAYERS, ffn_dim=m.DIM_FEEDFORWARD,
                linked_queries=linked),
            criterion=SetCriterion(
                num_classes, class_weight=m.CLASS_WEIGHT, mask_weight=m.MASK_WEIGHT,
                dice_weight=m.DICE_WEIGHT, no_object_weight=m.NO_OBJECT_WEIGHT,
                num_points=m.TRAIN_NUM_POINTS, oversample_ratio=m.OVERSAMPLE_RATIO,
                importance_sample_ratio=m.IMPORTANCE_SAMPLE_RATIO),
            in_features=in_features, num_classes=num_classes,
            ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
            semantic_on=m.TEST.SEMANTIC_ON, instance_on=m.TEST.INSTANCE_ON,
            panoptic_on=m.TEST.PANOPTIC_ON, object_mask_threshold=m.TEST.OBJECT_MASK_THRESHOLD,
            overlap_threshold=m.TEST.OVERLAP_THRESHOLD, test_topk=m.TEST.DETECTIONS_PER_IMAGE,
            metadata=MetadataCatalog.get(datasets[0]) if datasets else None,
            test_mode=m.TEST.MODE, crop_size=m.TEST.CROP_SIZE, stride=m.TEST.STRIDE,
            crop_batch_size=m.TEST.CROP_BATCH_SIZE, test_autocast=m.TEST.AUTOCAST,
            compile_mode=cfg.MODEL.COMPILE,
        )

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if not self.training and self.test_mode == "slide":
            return [{"sem_seg": sem_seg_postprocess(self.slide_semantic(img), img.shape[-2:],
                                                    x.get("height", img.shape[-2]), x.get("width", img.shape[-1]))}
                    for x, img in zip(batched_inputs, images)]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        cls_list, mask_list = self.predict_logits(images.tensor)
        if self.training:
            return self.criterion(cls_list, mask_list, self._targets(batched_inputs, images))
        padded = images.tensor.shape[-2:]
        results = []
        for i, x in enumerate(batched_inputs):
            out_h, out_w = x.get("height", images.image_sizes[i][0]), x.get("width", images.image_sizes[i][1])
            out = {}
            if self.semantic_on:
                seg = semantic_logits(cls_list[-1][i:i + 1], mask_list[-1][i:i + 1], padded)[0]
                out["sem_seg"] = sem_seg_postprocess(seg, images.image_sizes[i], out_h, out_w)
            if self.instance_on or self.panoptic_on:
                out.update(self._mask_outputs(cls_list[-1][i], mask_list[-1][i], padded,
                                              images.image_sizes[i], out_h, out_w))
            results.append(out)
        return results

    def predict_logits(self, images: torch.Tensor, all_layers: Optional[bool] = None):
        """Per-layer class and mask logits for normalised images [B, 3, H, W] (H, W multiples of
        the backbone's size_divisibility). Outside training (``all_layers`` None) only the last
        prediction is made: inference reads nothing else."""
        all_layers = self.training if all_layers is None else all_layers
        dtype = None if self.training else self.test_autocast
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            feats = self.backbone(images)
            queries = self.backbone.linked_queries() if hasattr(self.backbone, "linked_queries") else None
            mask_features, memories = self.pixel_decoder([feats[f] for f in self.in_features])
            cls_list, mask_list = self.predictor(mask_features, memories, queries, all_layers=all_layers)
        if dtype is not None:  # post-processing in float32
            cls_list, mask_list = [c.float() for c in cls_list], [m.float() for m in mask_list]
        return cls_list, mask_list

    def slide_windows(self, h: int, w: int):
        """Top-left corners and size of the sliding windows over an h x w image, placed as the
        reference places them: a regular grid whose last row / column is shifted back inside the
        image, windows clipped to the image when it is smaller than the crop."""
        (ch, cw), (sh, sw) = self.crop_size, self.stride
        ch, cw = min(ch, h), min(cw, w)
        rows = max(h - ch + sh - 1, 0) // sh + 1
        cols = max(w - cw + sw - 1, 0) // sw + 1
        corners = [(min(r * sh, h - ch), min(c * sw, w - cw)) for r in range(rows) for c in range(cols)]
        return corners, (ch, cw)

    def slide_semantic(self, image: torch.Tensor) -> torch.Tensor:
        """[K, h, w] semantic scores of one normalised image [3, h, w]: windows of
        TEST.CROP_SIZE every TEST.STRIDE, run at most CROP_BATCH_SIZE at a time, scores averaged
        where windows overlap."""
        h, w = image.shape[-2:]
        corners, (ch, cw) = self.slide_windows(h, w)
        scores = image.new_zeros((self.num_classes, h, w))
        count = image.new_zeros((1, h, w))
        # passes of at most CROP_BATCH_SIZE windows, as even as they divide (18 by 8: 6, 6, 6,
        # not 8, 8, 2): the same work, and fewer input shapes for a compiled model to trace
        per_pass = math.ceil(len(corners) / math.ceil(len(corners) / self.crop_batch_size))
        for start in range(0, len(corners), per_pass):
            chunk = corners[start:start + per_pass]
            # every window has one size: pad them all at once, with static sizes (exportable)
            d = self.backbone.size_divisibility
            crops = F.pad(torch.stack([image[:, y:y + ch, x:x + cw] for y, x in chunk]),
                          (0, -cw % d, 0, -ch % d))
            cls_list, mask_list = self.predict_logits(crops)
            seg = semantic_logits(cls_list[-1], mask_list[-1], crops.shape[-2:])[..., :ch, :cw]
            for (y, x), s in zip(chunk, seg):
                scores[:, y:y + ch, x:x + cw] += s
                count[:, y:y + ch, x:x + cw] += 1
        return scores / count

    def _mask_outputs(self, cls, masks, padded, image_size, out_h, out_w) -> Dict:
        """The "instances" and/or "panoptic_seg" of one image from cls [Q, K+1] and mask logits
        [Q, h, w]: masks go to the padded size, are cropped to the image and resized to the
        requested output size before thresholding."""
        masks = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)[0]
        masks = sem_seg_postprocess(masks, image_size, out_h, out_w)
        thing_ids = self._thing_ids() if self.panoptic_on else None  # stuff is no instance
        out = {}
        if self.instance_on:
            out["instances"] = instance_inference(cls, masks, self.num_classes, self.test_topk, thing_ids)
        if self.panoptic_on:
            out["panoptic_seg"] = panoptic_inference(cls, masks, self.num_classes, self.object_mask_threshold,
                                                     self.overlap_threshold, thing_ids)
        return out

    def _thing_ids(self) -> List[int]:
        """Contiguous ids of the thing classes, read when needed: load_coco_json fills the
        metadata only once the dataset is loaded."""
        ids = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        if ids is None:
            raise ValueError("panoptic inference needs thing_dataset_id_to_contiguous_id in the metadata "
                             "of DATASETS.TRAIN[0] (or DATASETS.TEST[0] without a training set)")
        return list(ids.values())

    def _targets(self, batched_inputs, images: ImageList):
        """Per image: the instances' masks, or else one binary mask per class present in the
        label map (ignore pixels excluded)."""
        h, w = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "instances" in x:
                targets.append(self._instance_target(x["instances"], h, w))
                continue
            if "sem_seg" not in x:
                raise ValueError("training needs 'instances' or a 'sem_seg' label map in every input dict")
            seg = x["sem_seg"].to(self.device)
            seg = F.pad(seg, (0, w - seg.shape[-1], 0, h - seg.shape[-2]), value=self.ignore_value)
            labels = seg.unique()
            labels = labels[labels != self.ignore_value]
            if (labels >= self.num_classes).any() or (labels < 0).any():
                raise ValueError(f"label values {labels.tolist()} outside 0..{self.num_classes - 1} "
                                 f"(and ignore {self.ignore_value}): check the dataset's label mapping")
            targets.append({"labels": labels.long(), "masks": seg[None] == labels[:, None, None]})
        return targets

    def _instance_target(self, instances, h: int, w: int) -> Dict[str, torch.Tensor]:
        """One image's target from Instances (gt_classes, gt_masks), masks zero-padded to (h, w)."""
        masks = instances.gt_masks
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
        masks = (masks.tensor if isinstance(masks, BitMasks) else masks).to(self.device, torch.bool)
        labels = instances.gt_classes.to(self.device).long()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"instance classes {labels.unique().tolist()} outside 0..{self.num_classes - 1}: "
                             "check the dataset's category mapping and MODEL.SEM_SEG_HEAD.NUM_CLASSES")
        padded = masks.new_zeros((masks.shape[0], h, w))
        padded[:, :masks.shape[1], :masks.shape[2]] = masks
        return {"labels": labels, "masks": padded}
