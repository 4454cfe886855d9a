"""Semantic segmentation datasets of rein_d2 (registered, lazily, at import)."""
from .builtin import DATASETS, register_all
from .common import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    ID_TO_TRAINID,
    IGNORE_LABEL,
    check_count,
    check_train_ids,
    convert_labels,
    datasets_root,
    load_sem_seg_pairs,
    register_semantic_dataset,
)

register_all()

__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_COLORS", "DATASETS", "ID_TO_TRAINID", "IGNORE_LABEL",
    "check_count", "check_train_ids", "convert_labels", "datasets_root", "load_sem_seg_pairs",
    "register_semantic_dataset",
]
