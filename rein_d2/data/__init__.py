"""Dataset mappers and datasets of rein_d2 (importing registers the datasets)."""
from . import datasets
from .dataset_mappers import SemanticDatasetMapper, build_test_mapper, build_train_mapper
from .samplers import PositionedDataset, ResumableTrainingSampler, SeededMapper
from .datasets.synthstreets import register_synthetic_streets

register_synthetic_streets()  # the quick start's generated source / target domains (lazy)

__all__ = ["PositionedDataset", "ResumableTrainingSampler", "SeededMapper", "SemanticDatasetMapper",
           "build_test_mapper", "build_train_mapper", "datasets", "register_synthetic_streets"]
