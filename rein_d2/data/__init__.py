"""Dataset mappers (and, later, datasets) of rein_d2."""
from .dataset_mappers import SemanticDatasetMapper, build_test_mapper, build_train_mapper

__all__ = ["SemanticDatasetMapper", "build_test_mapper", "build_train_mapper"]
