"""Dataset mappers: dict from a detectron2 dataset -> model input."""
from .semantic import SemanticDatasetMapper

__all__ = ["SemanticDatasetMapper", "build_test_mapper", "build_train_mapper"]


def _mapper_class(cfg):
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name == "semantic":
        return SemanticDatasetMapper
    # Imported here so that a missing or broken one leaves the others usable.
    if name == "instance":
        from .instance import InstanceDatasetMapper
        return InstanceDatasetMapper
    if name == "panoptic":
        from .panoptic import PanopticDatasetMapper
        return PanopticDatasetMapper
    raise ValueError(f"unknown INPUT.DATASET_MAPPER_NAME {name!r}: semantic, instance or panoptic")


def build_train_mapper(cfg):
    """The training mapper named by INPUT.DATASET_MAPPER_NAME."""
    return _mapper_class(cfg)(cfg, is_train=True)


def build_test_mapper(cfg):
    """The test mapper named by INPUT.DATASET_MAPPER_NAME."""
    return _mapper_class(cfg)(cfg, is_train=False)
