"""Multi-target domain-generalization evaluation on two tiny target sets, checked against
IoUs computed by hand."""
import csv
import json
import re
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from conftest import config_path, log_lines
from rein_d2 import add_rein_config
from rein_d2.evaluation import eval_resize_shape, evaluate_domain_generalization
from test_meta_arch import MINI

CLASSES = ["a", "b", "c"]


class RedIsClassB(torch.nn.Module):
    """Predicts class 1 where the red channel is bright, else class 0, at the size it is given,
    and returns scores at the requested height/width (as a detectron2 segmentor does)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, inputs):
        outs = []
        for x in inputs:
            self.seen.append(tuple(x["image"].shape[-2:]))
            pred = (x["image"][0] > 127).long()
            scores = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()
            scores = torch.nn.functional.interpolate(scores[None], size=(x["height"], x["width"]),
                                                     mode="nearest")[0]
            outs.append({"sem_seg": scores})
        return outs


def register(tmp_path, images, labels, eval_size, classes=CLASSES):
    name = f"dg_{uuid.uuid4().hex[:8]}"
    dicts = []
    for i, (image, label) in enumerate(zip(images, labels)):
        img, lab = tmp_path / f"{name}_{i}.png", tmp_path / f"{name}_{i}_label.png"
        Image.fromarray(image).save(img)
        Image.fromarray(label).save(lab)
        dicts.append({"file_name": str(img), "sem_seg_file_name": str(lab),
                      "height": image.shape[0], "width": image.shape[1]})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255, evaluator_type="sem_seg",
                                  eval_size=eval_size)
    return name


def target_a(tmp_path):
    """2 frames 32x64, red on the left half; label: class b in columns 0-47, class c in 48-63,
    row 0 ignored. Evaluated at (32, 16): the model sees 16x32."""
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :32, 0] = 255
    label = np.full((32, 64), 1, np.uint8)
    label[:, 48:] = 2
    label[0] = 255
    return register(tmp_path, [image, image.copy()], [label, label.copy()], (32, 16))


def target_b(tmp_path):
    """1 frame 48x48, no red; label: class a in the top half, class b in the bottom half."""
    image = np.zeros((48, 48, 3), np.uint8)
    label = np.zeros((48, 48), np.uint8)
    label[24:] = 1
    return register(tmp_path, [image], [label], None)


@pytest.fixture
def cfg():
    c = add_rein_config(get_cfg())
    c.DATALOADER.NUM_WORKERS = 0
    c.INPUT.FORMAT = "RGB"
    return c


def test_per_dataset_and_mean_miou_match_hand_computation(tmp_path, cfg):
    a, b = target_a(tmp_path), target_b(tmp_path)
    model = RedIsClassB()
    summary = evaluate_domain_generalization(cfg, model, [a, b], output_dir=str(tmp_path / "out"))
    # Each dataset at its own evaluation size, scored at the label's resolution.
    assert model.seen == [(16, 32), (16, 32), (48, 48)]
    # A: per valid row, b: GT 48 columns, predicted 32 (all inside) -> IoU 32/48; c: GT 16, never
    # predicted -> 0; a: predicted on 32 columns but absent from the labels, so detectron2's
    # mIoU leaves it out (mmseg would count it as 0 and report 22.2).
    assert summary.iou[a][1] == pytest.approx(100 * 32 / 48)
    assert summary.iou[a][2] == pytest.approx(0)
    assert np.isnan(summary.iou[a][0])
    assert summary.miou[a] == pytest.approx(100 * (32 / 48) / 2)
    # B: everything predicted a: IoU a = 24/48 rows, b = 0, c absent everywhere (not counted).
    assert summary.iou[b][0] == pytest.approx(50)
    assert summary.miou[b] == pytest.approx(25)
    assert summary.mean_miou == pytest.approx((100 * (32 / 48) / 2 + 25) / 2)
    # aAcc: pixels right of all valid ones; mAcc: per class present in the labels
    assert summary.aacc[a] == pytest.approx(50) and summary.macc[a] == pytest.approx(100 * (32 / 48) / 2)
    assert summary.aacc[b] == pytest.approx(50) and summary.macc[b] == pytest.approx(50)
    assert summary.mean_aacc == pytest.approx(50) and summary.source == []

    out = tmp_path / "out"
    data = json.loads((out / "dg_summary.json").read_text())
    assert data["mean_mIoU"] == pytest.approx(summary.mean_miou)
    assert set(data["mIoU"]) == {a, b}
    rows = list(csv.reader(open(out / "dg_summary.csv")))
    assert rows[0] == ["dataset", "domain", "mIoU", "mAcc", "aAcc"] + CLASSES
    assert rows[-1][0] == "mean over targets" and rows[1][1] == "target"
    assert float(rows[1][2]) == pytest.approx(summary.miou[a], abs=1e-3)
    assert float(rows[1][4]) == pytest.approx(50, abs=1e-3)
    assert (out / "dg_summary.png").stat().st_size > 1000
    table = summary.table()
    assert a in table and "mean over targets" in table and f"{summary.mean_miou:.2f}" in table


def test_a_test_set_of_the_training_domain_is_reported_apart_from_the_mean(tmp_path, cfg):
    """Training on domain "x": its validation set is the source, outside the DG mean."""
    a, b = target_a(tmp_path), target_b(tmp_path)
    for name, domain in ((a, "x"), (b, "y")):
        MetadataCatalog.get(name).set(domain=domain)
    train = f"dg_train_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(train).set(domain="x")
    cfg.DATASETS.TRAIN = (train,)
    summary = evaluate_domain_generalization(cfg, RedIsClassB(), [a, b], output_dir=str(tmp_path / "o"))
    assert summary.source == [a] and summary.targets == [b]
    assert summary.mean_miou == pytest.approx(summary.miou[b]) == pytest.approx(25)
    table = summary.table()
    assert f"| {a} " in table and "source" in table
    data = json.loads((tmp_path / "o" / "dg_summary.json").read_text())
    assert data["source"] == [a] and data["targets"] == [b] and data["mean_mIoU"] == pytest.approx(25)


def test_label_values_outside_the_classes_name_the_file(tmp_path, cfg):
    image = np.zeros((8, 8, 3), np.uint8)
    label = np.zeros((8, 8), np.uint8)
    label[0, 0] = 7
    name = register(tmp_path, [image], [label], None)
    with pytest.raises(ValueError, match=r"_0_label.png holds values \[7\] outside 0..2"):
        evaluate_domain_generalization(cfg, RedIsClassB(), [name])


def test_no_targets_and_mixed_label_spaces_are_refused(tmp_path, cfg):
    with pytest.raises(ValueError, match="no target datasets"):
        evaluate_domain_generalization(cfg, RedIsClassB(), [])
    a = target_b(tmp_path)
    other = register(tmp_path, [np.zeros((8, 8, 3), np.uint8)], [np.zeros((8, 8), np.uint8)], None,
                     classes=["x", "y"])
    with pytest.raises(ValueError, match="one label space"):
        evaluate_domain_generalization(cfg, RedIsClassB(), [a, other])


@pytest.mark.parametrize("h,w,scale,expected", [
    (1024, 2048, (1024, 512), (512, 1024)),   # Cityscapes val at 1024x512
    (720, 1280, (1280, 720), (720, 1280)),    # BDD100K val at its own 1280x720
    (1536, 2048, (1024, 512), (512, 683)),    # Mapillary-like 4:3 frame, aspect kept
    (300, 400, None, (300, 400)),             # no evaluation size: as is
])
def test_evaluation_size_keeps_the_aspect_ratio(h, w, scale, expected):
    assert eval_resize_shape(h, w, scale) == expected


def test_command_line_tool_with_a_real_model(tmp_path, capsys):
    """tools/evaluate_dg.py builds the model from a config and evaluates two targets."""
    from rein_d2.tools import evaluate_dg

    # (target A's 16x32 evaluation size would leave the model a 1x1 stride-32 map, too small
    # for GroupNorm: two copies of B instead.)
    a, b = target_b(tmp_path), target_b(tmp_path)
    out = tmp_path / "dg"
    # the progress lines, whichever stream the tool's logger writes to
    with log_lines("rein_d2.evaluation") as progress:
        assert evaluate_dg.main(["--config-file", config_path("rein_dinov2.yaml"), "--datasets", a, b,
                                 "--output-dir", str(out), *map(str, MINI), "DATALOADER.NUM_WORKERS", "0"]) == 0
    printed = capsys.readouterr().out
    assert a in printed and b in printed and "mean" in printed
    # per target: which one, then images done / total with the rate (not silent for minutes)
    for k, name in enumerate((a, b)):
        assert f"Evaluating {name} (target, {k + 1} of 2): 1 images" in progress
        assert any(re.fullmatch(rf"{name}: 1/1 images, [0-9.]+ s/image, 0:00:00 left", l) for l in progress)
    data = json.loads((out / "dg_summary.json").read_text())
    assert set(data["mIoU"]) == {a, b} and all(0 <= v <= 100 for v in data["mIoU"].values())


@pytest.mark.parametrize("label,described", [
    (np.zeros((8, 4), np.uint8), "4x8 with 1 channel(s)"),          # another size
    (np.zeros((8, 8, 3), np.uint8), "8x8 with 3 channel(s)"),       # a colour-coded label
])
def test_label_of_another_size_or_channel_count_names_the_file(tmp_path, cfg, label, described):
    name = register(tmp_path, [np.zeros((8, 8, 3), np.uint8)], [label], None)
    with pytest.raises(ValueError) as err:
        evaluate_domain_generalization(cfg, RedIsClassB(), [name])
    msg = str(err.value)
    assert f"{name}_0_label.png is {described}" in msg and "is 8x8 (W x H)" in msg
    assert f"{name}_0.png" in msg and "single-channel label of the image's size" in msg


def test_an_empty_split_names_the_dataset_and_where_it_looked(tmp_path, cfg):
    name = f"dg_empty_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, ignore_label=255, evaluator_type="sem_seg",
                                  image_root=str(tmp_path / "images"))
    with pytest.raises(ValueError) as err:
        evaluate_domain_generalization(cfg, RedIsClassB(), [name])
    msg = str(err.value)
    assert f"'{name}' has no images" in msg and str(tmp_path / "images") in msg


def test_summary_chart_labels_do_not_run_into_each_other():
    """dg_summary.png with the longest names the configs use: every x-axis label (wrapped at
    underscores) has a box of its own, inside the figure."""
    from rein_d2.evaluation.domain_generalization import DGSummary

    names = [f"foggy_cityscapes_{b}_instance_val" for b in ("0.02", "0.01", "0.005")] + [
        "bdd100k_instance_val", "cityscapes_fine_panoptic_val", "mapillary_panoptic_val"]
    scores = {n: 10.0 * i for i, n in enumerate(names)}
    summary = DGSummary(CLASSES, miou=dict(scores), source=[names[4]],
                        metrics={"PQ": dict(scores), "AP": dict(scores), "box_AP": dict(scores)})
    fig = summary.figure()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert len(fig.axes) == 4  # PQ, AP, box AP, mIoU
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) == len(names) + 1  # and the mean
        for i, a in enumerate(boxes):
            assert fig.bbox.x0 <= a.x0 and a.x1 <= fig.bbox.x1
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
