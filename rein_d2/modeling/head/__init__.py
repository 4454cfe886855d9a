"""Mask2Former-style head parts: pixel decoder, masked-attention query decoder, inference."""
from .inference import instance_inference, panoptic_inference, semantic_logits
from .ms_deform_attn import MSDeformAttn, ms_deform_attn_sample
from .pixel_decoder import MSDeformAttnPixelDecoder
from .criterion import HungarianMatcher, SetCriterion, point_sample
from .transformer_decoder import QueryDecoder

__all__ = ["HungarianMatcher", "SetCriterion", "point_sample", "MSDeformAttn", "ms_deform_attn_sample", "MSDeformAttnPixelDecoder", "QueryDecoder",
           "semantic_logits", "instance_inference", "panoptic_inference"]
