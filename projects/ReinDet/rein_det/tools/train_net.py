"""Train or evaluate a Rein detector (Mask R-CNN / Cascade Mask R-CNN): rein_d2's
tools/train_net.py with ReinDet's config keys, backbone, mapper and datasets.

    python projects/ReinDet/train_net.py \
        --config-file projects/ReinDet/configs/cityscapes/mask_rcnn_rein_dinov2_l.yaml \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth
    python projects/ReinDet/train_net.py --config-file ... --eval-only \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth MODEL.TRAINED_WEIGHTS output/model_final.pth

Flags (--resume, --eval-only, --num-gpus) are those of tools/train_net.py. The test sets are
scored with detectron2's COCOEvaluator (box and mask AP). BDD100K's instance set comes from
projects/ReinPanoptic (rein_panoptic, installed with rein_d2), imported when it imports.
"""
import logging
import sys

from detectron2.data import DatasetCatalog

from rein_d2 import load_config
from rein_d2.tools import train_net as tools_train_net
from rein_d2.utils.cli import EXIT_REFUSED, UserError, one_line
from rein_det import add_reindet_config  # (registers the backbone, mapper, datasets)

logger = logging.getLogger("rein_d2")

try:
    import rein_panoptic  # noqa: F401  (registers bdd100k_instance_val, among others)

    PANOPTIC_ERROR = None
except ImportError as e:
    PANOPTIC_ERROR = e


def check_datasets(cfg) -> None:
    """Name every dataset of the config that nothing registered, and where it comes from (else
    a missing test set would stop the run at its first evaluation, hours in)."""
    unknown = [n for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if n not in DatasetCatalog.list()]
    if not unknown:
        return
    hint = ""
    if PANOPTIC_ERROR is not None and any(n.startswith(("bdd100k_instance", "cityscapes_instance"))
                                          for n in unknown):
        hint = (" cityscapes_instance_* and bdd100k_instance_* are registered by "
                "projects/ReinPanoptic's package rein_panoptic, "
                f"which could not be imported ({PANOPTIC_ERROR}): install it (pip install -e . installs "
                "it with rein_d2) and its requirements, "
                "or leave BDD100K out, e.g. DATASETS.TEST '(\"foggy_cityscapes_0.02_instance_val\",)'")
    raise UserError(f"unregistered dataset(s) in the config: {', '.join(unknown)}.{hint}")


def main(args):
    if PANOPTIC_ERROR is not None:
        logger.warning("rein_panoptic (projects/ReinPanoptic) is not importable (%s): the "
                       "bdd100k_instance_* datasets are not registered", PANOPTIC_ERROR)
    try:
        check_datasets(load_config(args.config_file, args.opts, (add_reindet_config,)))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    return tools_train_net.main(args, add_config=(add_reindet_config,))


if __name__ == "__main__":
    tools_train_net.run(main)
