"""detectron2's evaluators and test loaders chosen by a dataset's ``evaluator_type``, as
DefaultTrainer.build_evaluator / build_test_loader expect. One table, one entry per kind."""
import logging
from typing import Callable, Dict, List, Optional

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import (CityscapesInstanceEvaluator, CityscapesSemSegEvaluator,
                                   COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluator,
                                   DatasetEvaluators)

from .domain_generalization import semantic_evaluator, semantic_test_loader

__all__ = ["EVALUATORS", "build_evaluator", "build_test_loader"]

logger = logging.getLogger(__name__)


def _coco_panoptic(cfg, name, output_dir):
    evaluators = [COCOPanopticEvaluator(name, output_dir)]
    if cfg.MODEL.MASK2FORMER.TEST.INSTANCE_ON:  # the model's instances too: mask AP
        if MetadataCatalog.get(name).get("json_file", None):
            evaluators.append(COCOEvaluator(name, output_dir=output_dir))
        else:
            logger.warning("%s: no instances json (metadata json_file) to score the model's "
                           "instances against: PQ only", name)
    return evaluators


# evaluator_type -> (cfg, dataset name, output dir) -> evaluators
EVALUATORS: Dict[str, Callable[..., List[DatasetEvaluator]]] = {
    "sem_seg": lambda cfg, name, out: [semantic_evaluator(name, out)],
    "coco": lambda cfg, name, out: [COCOEvaluator(name, output_dir=out)],
    "coco_panoptic_seg": _coco_panoptic,
    "cityscapes_instance": lambda cfg, name, out: [CityscapesInstanceEvaluator(name)],
    "cityscapes_sem_seg": lambda cfg, name, out: [CityscapesSemSegEvaluator(name)],
}


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if kind not in EVALUATORS:
        raise NotImplementedError(
            f"no evaluator for dataset '{dataset_name}' (evaluator_type {kind!r}); rein_d2 "
            f"evaluates {', '.join(sorted(EVALUATORS))}: set evaluator_type in its metadata, or "
            f"pass evaluators to ReinTrainer.test")
    evaluators = EVALUATORS[kind](cfg, dataset_name, output_dir)
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_test_loader(cfg, dataset_name: str):
    """Semantic datasets at their evaluation size (as the DG evaluation scores them); others
    through the test mapper of INPUT.DATASET_MAPPER_NAME."""
    if MetadataCatalog.get(dataset_name).get("evaluator_type", None) == "sem_seg":
        return semantic_test_loader(cfg, dataset_name)
    from ..data import build_test_mapper

    return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))
