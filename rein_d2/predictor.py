"""Predictions from Python: a model built from a config and its weights, with the checks the
tools make, applied to image files, arrays or lists of them.

    import cv2
    from rein_d2 import Predictor

    predictor = Predictor("configs/rein_dinov2.yaml", weights="weights/rein_dinov2_gtav.pth")
    pred = predictor("photo.jpg")              # a path, an HxWx3 BGR uint8 array, or a list
    pred.labels                                # HxW class ids at the image's own size
    pred.probabilities                         # KxHxW class probabilities (sum 1 per pixel)
    cv2.imwrite("overlay.png", predictor.draw("photo.jpg", pred))

Images are prepared as the domain-generalization evaluation prepares them (rein_d2.evaluation
DGTestMapper: a keep-ratio bilinear resize, then the model's own normalisation); the model's
MODEL.MASK2FORMER.TEST keys choose sliding windows (MODE "slide", CROP_SIZE, STRIDE) and
autocast (AUTOCAST), as in every tool.
"""
import numbers
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.modeling import build_model
from PIL import Image

from .config import load_config, merge_overrides
from .data.dataset_mappers.instance import read_image_checked
from .engine import check_weight_files, load_model_weights
from .evaluation.domain_generalization import default_eval_size
from .evaluation.semantic import DGTestMapper
from .utils.cli import UserError
from .utils.visualizer import OverlayDrawer, demo_metadata

__all__ = ["Prediction", "Predictor", "TEST_SIZE"]

# ``resize`` value: the config's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, as detectron2's
# DefaultPredictor and tools/demo.py resize.
TEST_SIZE = "test"

ImageInput = Union[str, os.PathLike, np.ndarray]


@dataclass
class Prediction:
    """The model's output for one image, on the CPU, at the image's own size. ``outputs`` is the
    model's dict ("sem_seg": [K, H, W] scores; "panoptic_seg": (ids, segments_info);
    "instances"), as detectron2 models return it; the properties read it."""
    outputs: Dict

    @property
    def scores(self) -> Optional[torch.Tensor]:
        """[K, H, W] semantic class scores (float32): what the evaluation takes the argmax of."""
        return self.outputs.get("sem_seg")

    @property
    def labels(self) -> Optional[np.ndarray]:
        """[H, W] class id of each pixel (uint8 up to 256 classes, else int32), or None when
        the model gives no semantic output (MODEL.MASK2FORMER.TEST.SEMANTIC_ON False)."""
        if self.scores is None:
            return None
        labels = self.scores.argmax(dim=0)
        return labels.to(torch.uint8 if self.scores.shape[0] <= 256 else torch.int32).numpy()

    @property
    def probabilities(self) -> Optional[np.ndarray]:
        """[K, H, W] float32 class probabilities: the scores normalised to sum 1 at each pixel
        (Mask2Former's scores, a sum over queries of class probability x mask probability, are
        not normalised themselves)."""
        if self.scores is None:
            return None
        scores = self.scores.float()
        return (scores / scores.sum(dim=0, keepdim=True).clamp_min(1e-12)).numpy()

    @property
    def panoptic(self):
        """(HxW int32 segment ids, segments_info) when the model gives a panoptic output
        (MODEL.MASK2FORMER.TEST.PANOPTIC_ON), else None. Segment 0 is unassigned."""
        if "panoptic_seg" not in self.outputs:
            return None
        ids, segments_info = self.outputs["panoptic_seg"]
        return ids.to(torch.int32).numpy(), segments_info

    @property
    def instances(self):
        """detectron2 ``Instances`` (pred_masks, pred_boxes, pred_classes, scores) when the model
        gives them (MODEL.MASK2FORMER.TEST.INSTANCE_ON), else None."""
        return self.outputs.get("instances")


def _to_cpu(outputs: Dict) -> Dict:
    out = {}
    for key, value in outputs.items():
        if key == "panoptic_seg":
            out[key] = (value[0].cpu(), value[1])
        else:  # sem_seg tensors and Instances both have .to
            out[key] = value.to("cpu")
    return out


class Predictor:
    """A model ready to predict: ``Predictor(config, weights)``, then ``predictor(image)``.

    ``config`` is a config file (loaded by rein_d2.load_config, with ``opts``: KEY, VALUE, ...
    overrides) or a CfgNode (copied). ``weights`` / ``trained_weights`` set MODEL.WEIGHTS /
    MODEL.TRAINED_WEIGHTS. The weights are checked as the tools check them: a missing file,
    weights for another model and any weight left random are refused (UserError naming the
    file and what to set; MODEL.ALLOW_RANDOM_WEIGHTS lifts the last).

    ``resize``: the size each image is predicted at, as (long edge, short edge) limits of a
    keep-ratio resize (a dataset's metadata ``eval_size`` is one; the DG evaluation uses it);
    TEST_SIZE (default) for the config's INPUT.MAX_SIZE_TEST / MIN_SIZE_TEST; None for the
    image's own size. Predictions always come back at the image's own size.
    ``batch_size``: images per model call when a list is given.
    """

    def __init__(self, config: Union[str, CfgNode], weights: Optional[str] = None, opts: Sequence = (), *,
                 trained_weights: Optional[str] = None, resize=TEST_SIZE, batch_size: int = 1):
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            merge_overrides(cfg, opts)
        else:
            cfg = load_config(os.fspath(config), opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = os.fspath(weights)
        if trained_weights is not None:
            cfg.MODEL.TRAINED_WEIGHTS = os.fspath(trained_weights)
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        size = default_eval_size(cfg) if isinstance(resize, str) and resize == TEST_SIZE else resize
        if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
                isinstance(v, numbers.Integral) and v > 0 for v in size)):
            raise UserError(f"resize must be (long edge, short edge) in pixels, {TEST_SIZE!r} or None; "
                            f"got {resize!r}")
        check_weight_files(cfg)  # a mistyped path: one line before the model is built
        cfg.freeze()
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        load_model_weights(cfg, self.model)  # MODEL.WEIGHTS (+ TRAINED_WEIGHTS); all or refused
        self.mapper = DGTestMapper(cfg.INPUT.FORMAT, size)
        self.batch_size = batch_size
        dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
        # class names and colours of DATASETS.TEST[0] (Cityscapes' without one)
        self.metadata = demo_metadata(dataset, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)

    @property
    def class_names(self) -> List[str]:
        return list(self.metadata.stuff_classes)

    def read(self, image: ImageInput) -> np.ndarray:
        """``image`` as the model reads it: HxWx3 in INPUT.FORMAT order. A path is read as the
        evaluation reads it; an array must be HxWx3 uint8 in BGR order (as cv2.imread returns
        it and as detectron2's DefaultPredictor takes it)."""
        if isinstance(image, (str, os.PathLike)):
            return self.mapper.read({"file_name": os.fspath(image)})
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            what = (f"an array of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray)
                    else f"a {type(image).__name__}")
            raise UserError(f"expected an image path or an HxWx3 uint8 BGR array (as cv2.imread returns), "
                            f"got {what}")
        fmt = self.cfg.INPUT.FORMAT
        if fmt == "BGR":
            return image
        if fmt == "RGB":
            return np.ascontiguousarray(image[:, :, ::-1])
        return convert_PIL_to_numpy(Image.fromarray(image[:, :, ::-1]), fmt)

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]):
        """The Prediction of one image, or a list of them for a list (or tuple) of images."""
        if isinstance(images, (list, tuple)):  # read batch by batch: a long list is not held in memory
            return [p for start in range(0, len(images), self.batch_size)
                    for p in self.predict_inputs([self.mapper.model_input(self.read(image))
                                                  for image in images[start:start + self.batch_size]])]
        return self.predict_inputs([self.mapper.model_input(self.read(images))])[0]

    def predict_inputs(self, inputs: List[Dict]) -> List[Prediction]:
        """Predictions for model inputs already prepared (``self.mapper``'s dicts, as from a
        detectron2 test loader with that mapper), in one model call."""
        with torch.no_grad():
            return [Prediction(_to_cpu(out)) for out in self.model(inputs)]

    def draw(self, image: ImageInput, prediction: Optional[Prediction] = None, *, opacity: float = 0.5,
             confidence_threshold: float = 0.5) -> np.ndarray:
        """An overlay of ``prediction`` (predicted here when not given) on ``image``: BGR uint8,
        the image's size, with class names and a legend of the classes present (instances
        below ``confidence_threshold`` left out). Write it with cv2.imwrite."""
        if isinstance(image, (str, os.PathLike)):
            bgr = read_image_checked(os.fspath(image), "BGR")
        else:
            self.read(image)  # the same checks as for predicting
            bgr = image
        if prediction is None:
            prediction = self(bgr)
        drawer = OverlayDrawer(self.metadata, opacity=opacity, confidence_threshold=confidence_threshold)
        return drawer(bgr, prediction.outputs)
