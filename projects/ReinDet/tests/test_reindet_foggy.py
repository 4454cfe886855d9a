"""Foggy Cityscapes in its official layout: the registered records (one file per beta, exact
instance masks, boxes, classes, crowd flags), the errors for a missing root or foggy image,
and COCO AP 100 for perfect predictions through ReinTrainer.test and COCOEvaluator."""
import json
import os
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, BoxMode, Instances
from PIL import Image

from rein_d2.engine import ReinTrainer
from rein_det.foggy_cityscapes import FOGGY_BETAS
from reindet_testing import _reindet_seed, reindet_cfg  # noqa: F401 (fixtures)

H, W = 40, 64
# Per frame (split val): instance id -> rectangles (y0, y1, x0, x1) it covers. Cityscapes ids:
# label * 1000 + k for an instance, the bare label id for a crowd region; 7 road (stuff),
# 24 person, 25 rider, 26 car, 29 caravan (ignored in evaluation), 33 bicycle.
FRAMES = {
    "frankfurt/frankfurt_000000_000294": {
        26000: [(5, 15, 4, 20)],
        26001: [(20, 30, 10, 30)],
        24000: [(8, 30, 40, 44), (26, 30, 44, 50)],  # an L shape: the box is not the mask
        26: [(32, 38, 0, 16)],  # a crowd of cars ("cargroup")
        29000: [(2, 6, 50, 60)],  # caravan: no instance class of the benchmark
    },
    "lindau/lindau_000001_000019": {
        25000: [(4, 20, 30, 38)],
        33000: [(14, 26, 26, 44)],  # drawn after the rider, overlapping it
    },
}
# Cityscapes label id -> detectron2's contiguous thing id (person, rider, car, ..., bicycle).
THING = {24: 0, 25: 1, 26: 2, 33: 7}
LABEL_NAMES = {24: "person", 25: "rider", 26: "car", 29: "caravan", 33: "bicycle"}


def _label(instance_id):
    return instance_id // 1000 if instance_id >= 1000 else instance_id


def _instance_map(spec):
    inst = np.full((H, W), 7, np.uint16)  # road everywhere else
    for iid, rects in spec.items():
        for y0, y1, x0, x1 in rects:
            inst[y0:y1, x0:x1] = iid
    return inst


@pytest.fixture(scope="module")
def foggy_root(tmp_path_factory):
    """The official files of two val frames: clear and foggy images, gtFine annotations."""
    root = tmp_path_factory.mktemp("foggy_d2")
    city = root / "cityscapes"
    for k, (stem, spec) in enumerate(FRAMES.items()):
        for d in ("leftImg8bit/val", "leftImg8bit_foggy/val", "gtFine/val"):
            (city / d / os.path.dirname(stem)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(city / f"leftImg8bit/val/{stem}_leftImg8bit.png")
        for b, beta in enumerate(FOGGY_BETAS):  # each density its own grey, to tell them apart
            Image.fromarray(np.full((H, W, 3), 100 + 40 * b + k, np.uint8)).save(
                city / f"leftImg8bit_foggy/val/{stem}_leftImg8bit_foggy_beta_{beta}.png")
        inst = _instance_map(spec)  # a 16-bit PNG, as the official files
        Image.fromarray(inst).save(city / f"gtFine/val/{stem}_gtFine_instanceIds.png")
        labels = np.vectorize(_label)(inst).astype(np.uint8)
        Image.fromarray(labels).save(city / f"gtFine/val/{stem}_gtFine_labelIds.png")
        objects = [{"label": LABEL_NAMES[_label(i)] + ("group" if i < 1000 else ""),
                    "polygon": [[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]]}
                   for i, rects in spec.items() for y0, y1, x0, x1 in rects]
        (city / f"gtFine/val/{stem}_gtFine_polygons.json").write_text(
            json.dumps({"imgHeight": H, "imgWidth": W, "objects": objects}))
    return root


def test_records_per_beta_match_the_annotations_pixel_by_pixel(foggy_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(foggy_root))
    for b, beta in enumerate(FOGGY_BETAS):
        name = f"foggy_cityscapes_{beta}_instance_val"
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco" and meta.beta == float(beta)
        assert meta.thing_classes == ["person", "rider", "car", "truck", "bus", "train",
                                      "motorcycle", "bicycle"]
        records = {r["file_name"]: r for r in DatasetCatalog.get(name)}
        assert len(records) == len(FRAMES)
        for k, (stem, spec) in enumerate(FRAMES.items()):
            file_name = str(foggy_root / f"cityscapes/leftImg8bit_foggy/val/{stem}_leftImg8bit_foggy_beta_{beta}.png")
            r = records[file_name]
            assert r["image_id"] == os.path.basename(file_name) and (r["height"], r["width"]) == (H, W)
            assert np.asarray(Image.open(file_name))[0, 0, 0] == 100 + 40 * b + k  # this beta's image
            inst = _instance_map(spec)
            expected = [i for i in sorted(spec) if _label(i) in THING]  # no caravan, no road
            assert len(r["annotations"]) == len(expected)
            for iid, a in zip(expected, r["annotations"]):
                mask = inst == iid
                ys, xs = np.nonzero(mask)
                assert a["category_id"] == THING[_label(iid)]
                assert bool(a["iscrowd"]) == (iid < 1000)
                assert a["bbox_mode"] == BoxMode.XYXY_ABS
                # the box spans the whole mask, as in training (x1 = last column + 1)
                assert tuple(int(v) for v in a["bbox"]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                assert np.array_equal(mask_util.decode(a["segmentation"]).astype(bool), mask)


def test_many_frames_convert_in_spawned_workers_to_the_same_records(foggy_root, monkeypatch):
    """Past _PARALLEL_FROM frames the conversion runs in spawned (never forked) workers: same
    records, in the same order, as in-process."""
    import rein_det.foggy_cityscapes as foggy

    split = [str(foggy_root / f"cityscapes/{d}/val") for d in ("leftImg8bit", "gtFine")]
    alone = foggy.load_cityscapes_instance_pngs(*split)
    monkeypatch.setattr(foggy, "_PARALLEL_FROM", 1)
    spawned = []
    real = foggy.parallel_imap
    monkeypatch.setattr(foggy, "parallel_imap", lambda *a: spawned.append(a[2]) or real(*a))
    pooled = foggy.load_cityscapes_instance_pngs(*split)
    assert spawned and spawned[0] > 1 or (os.cpu_count() or 1) == 1
    assert [r["file_name"] for r in pooled] == [r["file_name"] for r in alone]
    for p, a in zip(pooled, alone):
        assert [(x["category_id"], x["iscrowd"], x["bbox"], x["segmentation"]["counts"]) for x in p["annotations"]] \
            == [(x["category_id"], x["iscrowd"], x["bbox"], x["segmentation"]["counts"]) for x in a["annotations"]]


def test_missing_root_and_missing_foggy_images_are_named(foggy_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("foggy_cityscapes_0.01_instance_val")
    message = str(e.value)
    assert "DETECTRON2_DATASETS" in message and str(tmp_path / "nowhere") in message
    assert "leftImg8bit_foggy/{train,val}/<city>/<stem>_leftImg8bit_foggy_beta_" in message
    assert "check_foggy_cityscapes.py" in message

    monkeypatch.setenv("DETECTRON2_DATASETS", str(foggy_root))
    with pytest.raises(FileNotFoundError, match="foggy_cityscapes_0.02_instance_train.*directory not found"):
        DatasetCatalog.get("foggy_cityscapes_0.02_instance_train")  # only val was written

    gone = foggy_root / "cityscapes/leftImg8bit_foggy/val/lindau/lindau_000001_000019_leftImg8bit_foggy_beta_0.005.png"
    kept = gone.read_bytes()
    gone.unlink()
    try:
        with pytest.raises(FileNotFoundError, match=r"1 of 2 .* beta 0\.005, e\.g\. .*lindau_000001_000019"):
            DatasetCatalog.get("foggy_cityscapes_0.005_instance_val")
    finally:
        gone.write_bytes(kept)


class _Perfect(torch.nn.Module):
    """Predicts exactly the non-crowd ground-truth masks of each image, at its original size,
    with the boxes a model draws around its masks (detectron2's BitMasks.get_bounding_boxes,
    the convention of the training boxes)."""

    def __init__(self, records):
        super().__init__()
        self.records = {r["file_name"]: r for r in records}

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            r = self.records[x["file_name"]]
            annos = [a for a in r["annotations"] if not a["iscrowd"]]
            out = Instances((x["height"], x["width"]))
            masks = BitMasks(torch.from_numpy(
                np.stack([mask_util.decode(a["segmentation"]) for a in annos]).astype(bool)))
            out.pred_boxes = masks.get_bounding_boxes()
            out.scores = torch.ones(len(annos))
            out.pred_classes = torch.tensor([a["category_id"] for a in annos])
            out.pred_masks = masks.tensor
            outputs.append({"instances": out})
        return outputs


def test_perfect_predictions_score_ap_100_for_boxes_and_masks(foggy_root, reindet_cfg, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(foggy_root))
    name = "foggy_cityscapes_0.02_instance_val"
    cfg = reindet_cfg("cityscapes/mask_rcnn_rein_dinov2_l.yaml", "DATASETS.TEST", (name,),
                      "OUTPUT_DIR", str(tmp_path))
    # (the domain-generalization evaluation: per target, mask AP and box_AP, COCOEvaluator's)
    results = ReinTrainer.test(cfg, _Perfect(DatasetCatalog.get(name)))
    assert results[name]["box_AP"] == pytest.approx(100.0)
    assert results[name]["AP"] == pytest.approx(100.0)
    # one wrong class: the score drops, so the evaluation looks at the predictions
    model = _Perfect(DatasetCatalog.get(name))
    for r in model.records.values():
        if r["annotations"]:
            r["annotations"][0]["category_id"] = 5
    cfg.OUTPUT_DIR = str(tmp_path / "wrong")
    assert ReinTrainer.test(cfg, model)[name]["box_AP"] < 100.0


def test_check_foggy_cityscapes_counts_each_split_and_names_what_is_missing(foggy_root, tmp_path,
                                                                            monkeypatch, capsys):
    """check_foggy_cityscapes.py (rein_det.tools.check_foggy_cityscapes) on the official layout:
    the records of every beta and split are counted; a missing split and a partial download are
    one line each, with exit status 2."""
    from rein_d2.data.datasets.labels import run_prepare
    from rein_det.tools import check_foggy_cityscapes

    monkeypatch.setenv("DETECTRON2_DATASETS", str(foggy_root))  # the tool sets it from --root
    assert run_prepare(check_foggy_cityscapes.main, ["--root", str(foggy_root), "--no-count-check"]) == 2
    assert "foggy_cityscapes_0.02_instance_train" in capsys.readouterr().err  # only val was written

    root = tmp_path / "both"
    shutil.copytree(foggy_root, root)
    for d in ("leftImg8bit", "leftImg8bit_foggy", "gtFine"):  # the same frames as a train split
        shutil.copytree(root / "cityscapes" / d / "val", root / "cityscapes" / d / "train")
    assert run_prepare(check_foggy_cityscapes.main, ["--root", str(root), "--no-count-check"]) == 0
    printed = capsys.readouterr().out
    for split in ("train", "val"):
        for beta in FOGGY_BETAS:
            assert f"foggy_cityscapes_{beta}_instance_{split}: 2 images, " in printed
    assert run_prepare(check_foggy_cityscapes.main, ["--root", str(root)]) == 2  # 2 of 2975 frames
    assert "2975" in capsys.readouterr().err
