"""Evaluation beyond detectron2's evaluators: multi-target domain-generalization runs."""
from .domain_generalization import (DGSummary, DGTestMapper, eval_resize_shape,
                                    evaluate_domain_generalization, label_loader)

__all__ = ["DGSummary", "DGTestMapper", "eval_resize_shape", "evaluate_domain_generalization",
           "label_loader"]
