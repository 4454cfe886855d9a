"""ReinPanoptic's datasets: the 19 Cityscapes classes (``classes``), the conversion core of the
preparation scripts (``convert``, ``sources``) and the registered names (``builtin``)."""
from .builtin import ACDC_CONDITIONS, DATASETS, register_all
from .classes import (CITYSCAPES_INSTANCE_META, CITYSCAPES_PANOPTIC_META, CLASSES, LABEL_DIVISOR,
                      STUFF_TRAIN_IDS, THING_TRAIN_IDS, TRAINID_TO_LABELID, instance_metadata,
                      panoptic_metadata)

__all__ = ["ACDC_CONDITIONS", "CITYSCAPES_INSTANCE_META", "CITYSCAPES_PANOPTIC_META", "CLASSES",
           "DATASETS", "LABEL_DIVISOR", "STUFF_TRAIN_IDS", "THING_TRAIN_IDS", "TRAINID_TO_LABELID",
           "instance_metadata", "panoptic_metadata", "register_all"]
