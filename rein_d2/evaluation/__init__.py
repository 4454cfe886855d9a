"""Evaluation: multi-target domain-generalization runs, and detectron2's evaluators chosen by
a dataset's evaluator_type."""
from .domain_generalization import DGSummary, evaluate_domain_generalization, source_datasets
from .evaluators import (EVALUATORS, INSTANCE_KINDS, PANOPTIC_KINDS, CityscapesAPEvaluator,
                         InProcessPanopticEvaluator, ThingCOCOEvaluator, build_evaluator,
                         build_test_loader)
from .semantic import (DGTestMapper, eval_resize_shape, label_loader, semantic_evaluator,
                       semantic_test_loader)

__all__ = ["CityscapesAPEvaluator", "DGSummary", "DGTestMapper", "EVALUATORS", "INSTANCE_KINDS",
           "PANOPTIC_KINDS",
           "InProcessPanopticEvaluator", "ThingCOCOEvaluator", "build_evaluator", "build_test_loader",
           "eval_resize_shape",
           "evaluate_domain_generalization", "label_loader", "semantic_evaluator",
           "semantic_test_loader", "source_datasets"]
