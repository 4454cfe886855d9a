"""The quick start's generated street scenes (``synthstreets_*``), registered by name and
metadata only: the scene generator (rein_d2.data.synthetic_streets, with its drawing code) is
imported when one of these splits is first loaded, not by ``import rein_d2``."""
import importlib
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .common import CITYSCAPES_CLASSES, CITYSCAPES_COLORS, IGNORE_LABEL, datasets_root

__all__ = ["SPLITS", "register_synthetic_streets"]

# name -> (style, seed offset); the actual seed is register_synthetic_streets' seed + offset.
SPLITS = {
    "synthstreets_source_train": ("source", 0),
    "synthstreets_source_val": ("source", 1000),
    "synthstreets_target_val": ("target", 2000),
}


def _generate(*args):
    return importlib.import_module("rein_d2.data.synthetic_streets").generate(*args)


def register_synthetic_streets(root=None, n_train=200, n_val=50, size=(256, 512), seed=0):
    """Register the synthstreets datasets (generated on first DatasetCatalog.get, then reused).

    ``synthstreets_source_train`` / ``synthstreets_source_val`` are in the source style,
    ``synthstreets_target_val`` in the target style. ``root`` defaults to
    $DETECTRON2_DATASETS/synthstreets, read when the data is first asked for. ``size`` is
    (height, width). Names already registered are left as they are. rein_d2 registers the
    defaults at import, so configs can name these datasets with nothing to prepare.
    """
    height, width = int(size[0]), int(size[1])
    counts = {"synthstreets_source_train": n_train, "synthstreets_source_val": n_val,
              "synthstreets_target_val": n_val}

    def split_root():
        return root if root is not None else os.path.join(datasets_root(), "synthstreets")

    for name, (style, off) in SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        split = name[len("synthstreets_"):]
        DatasetCatalog.register(
            name,
            lambda split=split, n=counts[name], style=style, s=seed + off: _generate(
                split_root(), split, n, style, height, width, s),
        )
        MetadataCatalog.get(name).set(
            stuff_classes=list(CITYSCAPES_CLASSES),
            stuff_colors=[list(c) for c in CITYSCAPES_COLORS],
            ignore_label=IGNORE_LABEL,
            evaluator_type="sem_seg",
            image_root=os.path.join(split_root(), split, "images"),
            sem_seg_root=os.path.join(split_root(), split, "labels"),
            style=style,
            domain=f"synthstreets_{style}",  # source val shares the training domain
        )
    return list(SPLITS)
