"""Dataset mappers: dict from a detectron2 dataset -> model input."""
from .instance import InstanceDatasetMapper
from .panoptic import PanopticDatasetMapper
from .semantic import SemanticDatasetMapper

__all__ = ["InstanceDatasetMapper", "PanopticDatasetMapper", "SemanticDatasetMapper",
           "build_test_mapper", "build_train_mapper"]

# INPUT.DATASET_MAPPER_NAME -> mapper class
MAPPERS = {"semantic": SemanticDatasetMapper, "instance": InstanceDatasetMapper,
           "panoptic": PanopticDatasetMapper}


def _mapper_class(cfg):
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        raise ValueError(f"unknown INPUT.DATASET_MAPPER_NAME {name!r}: {', '.join(MAPPERS)}")
    return MAPPERS[name]


def build_train_mapper(cfg):
    """The training mapper named by INPUT.DATASET_MAPPER_NAME."""
    return _mapper_class(cfg)(cfg, is_train=True)


def build_test_mapper(cfg):
    """The test mapper named by INPUT.DATASET_MAPPER_NAME."""
    return _mapper_class(cfg)(cfg, is_train=False)
