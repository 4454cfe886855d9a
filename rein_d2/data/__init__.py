"""Dataset mappers and datasets of rein_d2 (importing registers the datasets)."""
from . import datasets
from .dataset_mappers import SemanticDatasetMapper, build_test_mapper, build_train_mapper

__all__ = ["SemanticDatasetMapper", "build_test_mapper", "build_train_mapper", "datasets"]
