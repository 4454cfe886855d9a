"""ReinMask2Former: a detectron2 meta-architecture joining a backbone (with Rein's linked
queries when it has them), the deformable-attention pixel decoder and the masked-attention
query decoder. This version trains and predicts semantic segmentation.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from .head import MSDeformAttnPixelDecoder, QueryDecoder, SetCriterion, semantic_logits

__all__ = ["ReinMask2Former"]


@META_ARCH_REGISTRY.register()
class ReinMask2Former(nn.Module):
    @configurable
    def __init__(self, *, backbone: nn.Module, pixel_decoder: MSDeformAttnPixelDecoder,
                 predictor: QueryDecoder, criterion: SetCriterion, in_features: List[str],
                 num_classes: int, ignore_value: int, pixel_mean, pixel_std):
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
        return dict(
            backbone=backbone,
            pixel_decoder=MSDeformAttnPixelDecoder(
                in_channels=[shapes[f].channels for f in in_features],
                strides=[shapes[f].stride for f in in_features], feat_channels=m.HIDDEN_DIM,
                out_channels=m.HIDDEN_DIM, num_layers=m.ENC_LAYERS, num_heads=m.NHEADS,
                num_points=m.ENC_POINTS, ffn_dim=m.ENC_DIM_FEEDFORWARD),
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
        )

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        feats = self.backbone(images.tensor)
        queries = self.backbone.linked_queries() if hasattr(self.backbone, "linked_queries") else None
        mask_features, memories = self.pixel_decoder([feats[f] for f in self.in_features])
        cls_list, mask_list = self.predictor(mask_features, memories, queries)
        if self.training:
            return self.criterion(cls_list, mask_list, self._targets(batched_inputs, images))
        padded = images.tensor.shape[-2:]
        results = []
        for i, x in enumerate(batched_inputs):
            seg = semantic_logits(cls_list[-1][i:i + 1], mask_list[-1][i:i + 1], padded)[0]
            out_h, out_w = x.get("height", images.image_sizes[i][0]), x.get("width", images.image_sizes[i][1])
            results.append({"sem_seg": sem_seg_postprocess(seg, images.image_sizes[i], out_h, out_w)})
        return results

    def _targets(self, batched_inputs, images: ImageList):
        """Per image: one binary mask per class present (ignore pixels excluded)."""
        h, w = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "sem_seg" not in x:
                raise ValueError("training needs a 'sem_seg' label map in every input dict")
            seg = x["sem_seg"].to(self.device)
            seg = F.pad(seg, (0, w - seg.shape[-1], 0, h - seg.shape[-2]), value=self.ignore_value)
            labels = seg.unique()
            labels = labels[labels != self.ignore_value]
            if (labels >= self.num_classes).any() or (labels < 0).any():
                raise ValueError(f"label values {labels.tolist()} outside 0..{self.num_classes - 1} "
                                 f"(and ignore {self.ignore_value}): check the dataset's label mapping")
            targets.append({"labels": labels.long(), "masks": seg[None] == labels[:, None, None]})
        return targets
