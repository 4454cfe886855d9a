"""ViTDet's large-scale-jitter training input, as detectron2's DatasetMapper."""
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from rein_d2.data.dataset_mappers import MAPPERS

__all__ = ["ReinDetDatasetMapper"]


class ReinDetDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper (boxes and polygon / bitmask instance masks); in training with
    INPUT.LSJ.ENABLED, ViTDet's large-scale jitter: flip, resize to fit IMAGE_SIZE x a scale in
    [MIN_SCALE, MAX_SCALE], crop at most IMAGE_SIZE square (the backbone pads to the square),
    boxes recomputed from the cropped masks. Testing: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        lsj = cfg.INPUT.LSJ
        if is_train and lsj.ENABLED:
            size = lsj.IMAGE_SIZE
            ret["augmentations"] = [
                T.RandomFlip(horizontal=True),
                T.ResizeScale(lsj.MIN_SCALE, lsj.MAX_SCALE, size, size),
                T.FixedSizeCrop((size, size), pad=False),
            ]
            ret["recompute_boxes"] = cfg.MODEL.MASK_ON  # a crop cuts boxes; masks know the rest
        return ret


# INPUT.DATASET_MAPPER_NAME "detection": rein_d2's trainer builds its loaders through this table.
MAPPERS["detection"] = ReinDetDatasetMapper
