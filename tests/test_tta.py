"""SemanticSegmentorWithTTA, and evaluation with detectron2's SemSegEvaluator end to end."""
import math
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from PIL import Image

from rein_d2 import add_rein_config
from rein_d2.data import SemanticDatasetMapper
from rein_d2.evaluation import semantic_evaluator
from rein_d2.modeling import SemanticSegmentorWithTTA
from test_meta_arch import mini_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mini_model().eval()


def tta_cfg(min_sizes, flip):
    cfg = add_rein_config(get_cfg())
    cfg.TEST.AUG.MIN_SIZES = tuple(min_sizes)
    cfg.TEST.AUG.MAX_SIZE = 4000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def run(model, inputs):
    with torch.no_grad():
        return model(inputs)[0]["sem_seg"]


def test_one_scale_at_input_size_without_flip_is_the_model(model):
    x = {"image": torch.rand(3, 48, 64) * 255, "height": 48, "width": 64}
    out = SemanticSegmentorWithTTA(tta_cfg([48], False), model)([x])[0]["sem_seg"]
    torch.testing.assert_close(out, run(model, [x]), rtol=0, atol=1e-6)


def test_flip_averages_with_the_unflipped_output_on_the_mirrored_image(model):
    image = torch.rand(3, 48, 64) * 255
    x = {"image": image, "height": 48, "width": 64}
    out = SemanticSegmentorWithTTA(tta_cfg([48], True), model)([x])[0]["sem_seg"]
    mirrored = run(model, [{**x, "image": image.flip(-1)}]).flip(-1)
    expected = (run(model, [x]) + mirrored) / 2
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out, run(model, [x]))  # the mirrored pass did count


def test_multi_scale_output_has_the_requested_size(model):
    class Counting(torch.nn.Module):  # records the image sizes that reach the model
        def __init__(self):
            super().__init__()
            self.inner, self.calls = model, []

        def forward(self, inputs):
            self.calls.extend(tuple(x["image"].shape[-2:]) for x in inputs)
            return self.inner(inputs)

    counting = Counting()
    tta = SemanticSegmentorWithTTA(tta_cfg([32, 48, 64], True), counting, batch_size=2)
    x = {"image": torch.rand(3, 48, 64) * 255, "height": 60, "width": 80}
    out = tta([x])[0]["sem_seg"]
    assert out.shape == (3, 60, 80) and torch.isfinite(out).all()
    assert sorted(counting.calls) == sorted([(32, 43), (48, 64), (64, 85)] * 2)


# --- evaluation with SemSegEvaluator -------------------------------------------------------

def make_label(h, w, shift):
    label = np.zeros((h, w), np.uint8)
    label[:, w // 3 + shift:] = 1
    label[h // 2:, 2 * w // 3:] = 2
    label[:3] = 255
    return label


@pytest.fixture
def tiny_dataset(tmp_path):
    """Three 64x96 images with labels in {0, 1, 2, 255}, registered under a unique name."""
    rng = np.random.RandomState(0)
    dicts = []
    for i in range(3):
        label = make_label(64, 96, shift=4 * i)
        image = rng.randint(0, 256, (64, 96, 3)).astype(np.uint8)
        image[label == 1] //= 3  # classes separable by colour
        img_path, seg_path = tmp_path / f"img{i}.png", tmp_path / f"seg{i}.png"
        Image.fromarray(image).save(img_path)
        Image.fromarray(label).save(seg_path)
        dicts.append({"file_name": str(img_path), "sem_seg_file_name": str(seg_path),
                      "height": 64, "width": 96})
    name = f"rein_test_semseg_{uuid.uuid4().hex}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255,
                                  evaluator_type="sem_seg")
    yield name, dicts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def check_metrics(res):
    keys = ["mIoU", "fwIoU", "IoU-a", "IoU-b", "IoU-c"]
    assert set(keys) <= set(res)
    assert all(math.isfinite(res[k]) for k in keys), res


def test_inference_on_dataset_with_the_mapper_and_sem_seg_evaluator(model, tiny_dataset, tmp_path):
    name, dicts = tiny_dataset
    cfg = add_rein_config(get_cfg())
    loader = build_detection_test_loader(dicts, mapper=SemanticDatasetMapper(cfg, is_train=False))
    results = inference_on_dataset(model, loader, semantic_evaluator(name, output_dir=str(tmp_path)))
    check_metrics(results["sem_seg"])
    tta = SemanticSegmentorWithTTA(tta_cfg([48, 64], True), model)
    results = inference_on_dataset(tta, loader, semantic_evaluator(name))
    check_metrics(results["sem_seg"])


def test_sem_seg_evaluator_scores_ground_truth_and_a_constant_guess(tiny_dataset):
    name, dicts = tiny_dataset
    labels = [np.array(Image.open(d["sem_seg_file_name"])) for d in dicts]

    def evaluate(predict):
        evaluator = semantic_evaluator(name)  # detectron2's, with a label reader for numpy 1 and 2
        evaluator.reset()
        for d, label in zip(dicts, labels):
            classes = torch.from_numpy(predict(label)).long()
            scores = torch.nn.functional.one_hot(classes, 3).permute(2, 0, 1).float()
            evaluator.process([{"file_name": d["file_name"]}], [{"sem_seg": scores}])
        return evaluator.evaluate()["sem_seg"]

    perfect = evaluate(lambda label: np.where(label == 255, 0, label))  # ignore: any class
    assert perfect["mIoU"] == 100 and perfect["fwIoU"] == 100

    zeros = evaluate(np.zeros_like)  # IoU of "a" = its share of the labelled pixels
    valid = np.concatenate([lab[lab != 255] for lab in labels])
    share = 100 * (valid == 0).mean()
    assert math.isclose(zeros["IoU-a"], share) and zeros["IoU-b"] == zeros["IoU-c"] == 0
    assert math.isclose(zeros["mIoU"], share / 3)
