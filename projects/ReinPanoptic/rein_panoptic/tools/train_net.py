"""Train and evaluate Rein for panoptic or instance segmentation under domain shift:
rein_d2's tools/train_net.py, with this project's datasets registered.

    python projects/ReinPanoptic/train_net.py \
        --config-file projects/ReinPanoptic/configs/cityscapes/panoptic_rein_dinov2_l.yaml \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth OUTPUT_DIR output/panoptic_cityscapes
    python projects/ReinPanoptic/train_net.py --config-file ... --eval-only \
        MODEL.WEIGHTS weights/dinov2_vitl16_512.pth MODEL.TRAINED_WEIGHTS output/.../model_final.pth

Every DATASETS.TEST target is scored by the domain-generalization evaluation: PQ (PQ_th, PQ_st,
SQ, RQ), mask AP (AP, AP50) and mIoU as the config's MODEL.MASK2FORMER.TEST flags ask, one row
per target and the mean over the targets, in OUTPUT_DIR/inference/dg_summary.{json,csv,png}.
The flags (--resume, --eval-only, --num-gpus) are tools/train_net.py's.
"""
import rein_panoptic  # noqa: F401  (registers the panoptic and instance datasets)
from rein_d2.tools import train_net


def main(args):
    # (a function of this package, so that DDP's spawned workers find it by name)
    return train_net.main(args)


if __name__ == "__main__":
    train_net.run(main)
