"""rein_d2.Predictor on the miniature model: its predictions equal those the domain-
generalization evaluation scores (whole image, and sliding windows under autocast), for paths,
BGR arrays and batches; the tools' weight checks; panoptic / instance outputs; the overlay."""
import uuid

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances

from conftest import config_path
from rein_d2 import load_config
from rein_d2.engine import LightCheckpointer, load_model_weights
from rein_d2.evaluation import evaluate_domain_generalization
from rein_d2.utils.cli import UserError
from test_meta_arch import MINI

CONFIG = config_path("rein_dinov2.yaml")
STRICT = ["MODEL.ALLOW_RANDOM_WEIGHTS", "False", "DATALOADER.NUM_WORKERS", "0"]
EVAL_SIZE = (96, 64)  # (long, short): the 48x72 frames are predicted at 64x96


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A full checkpoint of the miniature model (seeded), so every weight comes from a file."""
    torch.manual_seed(3)
    cfg = load_config(CONFIG, [str(x) for x in MINI])
    folder = tmp_path_factory.mktemp("weights")
    LightCheckpointer(build_model(cfg), str(folder), light=False).save("mini")
    return str(folder / "mini.pth")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two labelled 48x72 frames registered as a semantic target with an evaluation size."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.RandomState(0)
    dicts = []
    for i in range(2):
        image = cv2.GaussianBlur(rng.randint(0, 256, (48, 72, 3), dtype=np.uint8), (0, 0), 2)
        label = rng.randint(0, 3, (48, 72)).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), image)
        cv2.imwrite(str(folder / f"{i}_label.png"), label)
        dicts.append({"file_name": str(folder / f"{i}.png"), "sem_seg_file_name": str(folder / f"{i}_label.png"),
                      "height": 48, "width": 72})
    name = f"predictor_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], stuff_colors=[[200, 0, 0], [0, 200, 0], [0, 0, 200]],
                                  ignore_label=255, evaluator_type="sem_seg", eval_size=EVAL_SIZE)
    return name, [d["file_name"] for d in dicts]


class Recorder(torch.nn.Module):
    """The evaluated model, keeping each output by file name."""

    def __init__(self, model):
        super().__init__()
        self.model, self.outputs = model, {}

    def forward(self, inputs):
        outs = self.model(inputs)
        for x, out in zip(inputs, outs):
            self.outputs[x["file_name"]] = out["sem_seg"].cpu()
        return outs


@pytest.mark.parametrize("opts", [
    [],
    ["MODEL.MASK2FORMER.TEST.MODE", "slide", "MODEL.MASK2FORMER.TEST.CROP_SIZE", "(64, 64)",
     "MODEL.MASK2FORMER.TEST.STRIDE", "(48, 48)", "MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16"],
], ids=["whole", "slide-bfloat16"])
def test_predictions_equal_the_dg_evaluations(weights, dataset, opts, tmp_path):
    from rein_d2 import Predictor

    name, files = dataset
    overrides = [str(x) for x in MINI] + STRICT + opts + ["DATASETS.TEST", f"('{name}',)"]
    cfg = load_config(CONFIG, overrides + ["MODEL.WEIGHTS", weights])
    model = build_model(cfg).eval()
    load_model_weights(cfg, model)
    recorder = Recorder(model)
    summary = evaluate_domain_generalization(cfg, recorder, [name], str(tmp_path / "dg"))
    assert set(recorder.outputs) == set(files) and summary.classes == ["a", "b", "c"]

    predictor = Predictor(CONFIG, weights=weights, opts=overrides, resize=EVAL_SIZE)
    assert predictor.model.test_mode == opts[1] if opts else predictor.model.test_mode == "whole"
    by_path = predictor(files[0])
    batch = predictor([cv2.imread(files[0]), files[1]])  # a BGR array (as cv2 reads it) and a path
    for f, p in zip(files, batch):
        scored = recorder.outputs[f]
        assert p.scores.shape == (3, 48, 72)  # at the image's own size
        assert torch.equal(p.scores, scored)
        np.testing.assert_array_equal(p.labels, scored.argmax(0).numpy())
        probs = p.probabilities
        np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(probs.argmax(0), p.labels)
    assert torch.equal(by_path.scores, recorder.outputs[files[0]])
    if not opts:  # two images per model call: the same up to float rounding (other shapes)
        predictor.batch_size = 2
        for f, p in zip(files, predictor(files)):
            torch.testing.assert_close(p.scores, recorder.outputs[f], rtol=1e-4, atol=1e-4)
    assert predictor.class_names == ["a", "b", "c"]


def test_the_tools_weight_checks(weights, tmp_path):
    from rein_d2 import Predictor

    opts = [str(x) for x in MINI] + STRICT
    with pytest.raises(UserError, match=r"^MODEL.WEIGHTS not found: .*nowhere.pth$"):
        Predictor(CONFIG, weights=str(tmp_path / "nowhere.pth"), opts=opts)
    with pytest.raises(UserError, match="MODEL.WEIGHTS is empty, so the frozen VFM would keep random weights"):
        Predictor(CONFIG, opts=opts)
    for resize in [(512,), 512, "full", (512.5, 256)]:
        with pytest.raises(UserError, match="resize must be"):
            Predictor(CONFIG, weights=weights, opts=opts, resize=resize)
    predictor = Predictor(CONFIG, weights=weights, opts=opts, resize=None)
    for bad, said in [(np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
                      (np.zeros((8, 8, 3), np.float32), "dtype float32"), (3, "a int")]:
        with pytest.raises(UserError, match=said):
            predictor(bad)
    with pytest.raises(OSError, match="missing.png"):
        predictor(str(tmp_path / "missing.png"))


def test_panoptic_and_instance_outputs_and_the_overlay(weights, dataset):
    from rein_d2 import Prediction, Predictor

    _, files = dataset
    name = f"predictor_panoptic_{uuid.uuid4().hex[:8]}"  # class 2 a thing, 0 and 1 stuff
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], thing_classes=["a", "b", "c"],
                                  thing_dataset_id_to_contiguous_id={2: 2})
    opts = [str(x) for x in MINI] + STRICT + [
        "MODEL.MASK2FORMER.TEST.INSTANCE_ON", "True", "MODEL.MASK2FORMER.TEST.PANOPTIC_ON", "True",
        "MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "DATASETS.TEST", f"('{name}',)", "DATASETS.TRAIN", "()"]
    predictor = Predictor(load_config(CONFIG, opts), weights=weights)  # a CfgNode works too
    pred = predictor(files[0])
    assert isinstance(pred, Prediction) and pred.labels.shape == (48, 72) and pred.labels.dtype == np.uint8
    ids, segments = pred.panoptic
    assert ids.shape == (48, 72) and ids.dtype == np.int32 and len(segments) == len(np.unique(ids[ids > 0]))
    assert isinstance(pred.instances, Instances) and pred.instances.pred_masks.shape[-2:] == (48, 72)

    image = cv2.imread(files[0])
    overlay = predictor.draw(files[0], pred, opacity=0.7)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert np.abs(overlay.astype(int) - image.astype(int)).mean() > 5
    semantic_only = Predictor(CONFIG, weights=weights, opts=[str(x) for x in MINI] + STRICT)
    plain = semantic_only(image)
    assert plain.panoptic is None and plain.instances is None
    assert semantic_only.draw(image).shape == image.shape  # predicted when no prediction is given

