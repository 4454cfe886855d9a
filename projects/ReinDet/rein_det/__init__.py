"""ReinDet: Rein's frozen VFM as the backbone of detectron2's Mask R-CNN and Cascade Mask R-CNN
(ViTDet's simple feature pyramid), with Foggy Cityscapes as COCO-AP test sets. Importing the
package registers the backbone, the "detection" dataset mapper and the datasets."""
import rein_d2  # noqa: F401  (rein_d2's backbones, mappers and datasets first)

from .backbone import ReinSimpleFeaturePyramid, ReinViTDet
from .config import add_reindet_config, check_reindet_config
from .foggy_cityscapes import register_foggy_cityscapes
from .mapper import ReinDetDatasetMapper

register_foggy_cityscapes()

__all__ = ["ReinDetDatasetMapper", "ReinSimpleFeaturePyramid", "ReinViTDet", "add_reindet_config",
           "check_reindet_config", "register_foggy_cityscapes"]
