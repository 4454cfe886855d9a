"""rein_d2: Rein (CVPR 2024) for domain-generalized semantic segmentation in detectron2.

Importing the package registers its backbones, its meta-architecture and its datasets.
``from rein_d2 import Predictor`` gives predictions from Python (rein_d2.predictor).
"""
try:
    import cv2  # noqa: F401  (any OpenCV distribution; setup.py lists none, see there)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("rein_d2 needs OpenCV's cv2 module, and none is importable: install one "
                      "distribution of it, e.g. `pip install opencv-python-headless` (or "
                      "`pip install -e .[opencv]`)") from e

from .config import add_rein_config, load_config
from . import modeling  # noqa: F401  (registration on import)
from . import data  # noqa: F401

__all__ = ["Prediction", "Predictor", "add_rein_config", "load_config"]


def __getattr__(name):
    # The predictor on first use: its drawing part imports matplotlib (a second and more),
    # which training and evaluation do not need.
    if name in ("Predictor", "Prediction"):
        from . import predictor
        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
