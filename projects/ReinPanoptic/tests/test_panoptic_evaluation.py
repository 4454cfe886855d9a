"""The multi-target domain-generalization evaluation on panoptic and instance targets: a model
that predicts the ground truth scores PQ, mask AP and mIoU 100 on every target through
detectron2's evaluators, and the summary's table, JSON and CSV carry them per target."""
import csv
import json
import os
import re

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator

from panoptic_testing import CLASSES, LAYOUTS, SMALL_INPUT, GroundTruthModel, load_cfg, write_panoptic_dataset
from rein_d2.evaluation import (CityscapesAPEvaluator, DGSummary, InProcessPanopticEvaluator,
                                ThingCOCOEvaluator, build_evaluator, evaluate_domain_generalization,
                                source_datasets)

pytest.importorskip("panopticapi", reason="COCOPanopticEvaluator needs panopticapi")

PANOPTIC_COLUMNS = ["PQ", "PQ_th", "PQ_st", "SQ", "RQ", "AP", "AP50"]


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Two panoptic targets (and their instance variants): the frames in two orders."""
    a = write_panoptic_dataset(str(tmp_path_factory.mktemp("target_a")), LAYOUTS, seed=0)
    b = write_panoptic_dataset(str(tmp_path_factory.mktemp("target_b")), LAYOUTS[::-1], seed=1)
    return a, b


def panoptic_cfg(*opts):
    return load_cfg("cityscapes/panoptic_rein_dinov2_l.yaml", *SMALL_INPUT, *opts)


class NoThings(GroundTruthModel):
    """The ground truth of the stuff only: things left void in the panoptic output, and every
    instance called a train (a class absent from the frames)."""

    def _predict(self, x):
        out = super()._predict(x)
        seg, info = out["panoptic_seg"]
        for s in info:
            if s["isthing"]:
                seg[seg == s["id"]] = 0
        out["panoptic_seg"] = (seg, [s for s in info if not s["isthing"]])
        out["instances"].pred_classes = torch.full_like(out["instances"].pred_classes, CLASSES.index("train"))
        return out


def test_perfect_predictions_score_100_on_every_target_and_the_summary_carries_them(targets, tmp_path):
    (a, _), (b, _) = targets
    MetadataCatalog.get(b).set(eval_size=(48, 32))  # b's own evaluation size: 32x48 images
    model = GroundTruthModel(a, b)
    out = tmp_path / "dg"
    summary = evaluate_domain_generalization(panoptic_cfg(), model, [a, b], str(out))
    # each target at its size: a at the config's test size (64x96 as is), b at its eval_size
    assert model.sizes == [(64, 96)] * 2 + [(32, 48)] * 2
    assert summary.columns == PANOPTIC_COLUMNS + ["mIoU", "mAcc", "aAcc"]
    for name in (a, b):
        for column in summary.columns:
            assert summary.scores(column)[name] == pytest.approx(100), (name, column)
    assert summary.targets == [a, b] and summary.mean("PQ") == pytest.approx(100)
    assert summary.results()["mean_over_targets"]["AP"] == pytest.approx(100)

    data = json.loads((out / "dg_summary.json").read_text())
    assert set(data["PQ"]) == {a, b} and data["mean_PQ"] == pytest.approx(100)
    assert data["AP50"][b] == pytest.approx(100) and data["mean_mIoU"] == pytest.approx(100)
    rows = list(csv.reader(open(out / "dg_summary.csv")))
    assert rows[0] == ["dataset", "domain"] + PANOPTIC_COLUMNS + ["mIoU", "mAcc", "aAcc"] + CLASSES
    assert [r[0] for r in rows[1:]] == [a, b, "mean over targets"]
    assert all(float(v) == pytest.approx(100) for v in rows[1][2:12] + rows[3][2:])
    assert (out / "dg_summary.png").stat().st_size > 1000
    assert os.path.isfile(out / a / "coco_instances_results.json")  # the evaluators' own files
    header = next(line for line in summary.table().splitlines() if re.match(r"\| dataset +\| domain", line))
    assert [c.strip() for c in header.strip("|").split("|")] == ["dataset", "domain"] + summary.columns


def test_missing_things_cost_pq_th_and_ap_but_not_pq_st(targets, tmp_path):
    (a, _), _ = targets
    summary = evaluate_domain_generalization(panoptic_cfg(), NoThings(a), [a], str(tmp_path))
    # GT classes: sky, road (stuff, right), car, person, bicycle (things, all missed)
    assert summary.scores("PQ_st")[a] == pytest.approx(100)
    assert summary.scores("PQ_th")[a] == pytest.approx(0)
    assert summary.scores("PQ")[a] == pytest.approx(100 * 2 / 5)
    assert summary.scores("AP")[a] == pytest.approx(0)
    assert summary.scores("mIoU")[a] == pytest.approx(100)  # the semantic output is still right
    # per class, written beside the evaluator's predictions.json
    rows = list(csv.reader(open(tmp_path / a / "pq_per_class.csv")))
    assert rows[0] == ["class", "PQ", "SQ", "RQ"]
    scores = {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}
    assert sorted(scores) == ["bicycle", "car", "person", "road", "sky"]
    assert scores["road"] == scores["sky"] == [100, 100, 100]
    assert scores["car"] == scores["person"] == scores["bicycle"] == [0, 0, 0]


def test_cityscapes_ap_and_coco_ap_are_two_columns_never_averaged_together():
    """cityscapesscripts' AP (CityscapesAPEvaluator: "cityscapes_segm") and COCO mask AP
    ("segm") of one run: each its own column and mean (the SYNTHIA panoptic run scores
    Cityscapes with the first and Mapillary with the second)."""
    summary = DGSummary(CLASSES)
    summary.add("cityscapes_fine_panoptic_val", {"cityscapes_segm": {"AP": 88.89, "AP50": 95.0}})
    summary.add("mapillary_panoptic_val", {"segm": {"AP": 86.28, "AP50": 90.0}})
    assert summary.columns == ["AP", "AP50", "cityscapes_AP", "cityscapes_AP50"]
    assert summary.mean("AP") == pytest.approx(86.28) and summary.mean("cityscapes_AP") == pytest.approx(88.89)
    assert "cityscapes_AP" not in summary.results()["mapillary_panoptic_val"]

    class Stub(CityscapesAPEvaluator):  # cityscapesscripts' result, without its files
        def __init__(self):
            pass

    results = {"segm": {"AP": 88.89, "AP50": 95.0}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("detectron2.evaluation.CityscapesInstanceEvaluator.evaluate", lambda self: results)
        assert Stub().evaluate() == {"cityscapes_segm": {"AP": 88.89, "AP50": 95.0}}


def test_cityscapes_panoptic_sets_of_detectron2_have_the_cityscapes_domain():
    """A Cityscapes val in a Cityscapes-trained run is its source (reported apart, out of the
    mean), in a SYNTHIA-trained run a target."""
    names = ["cityscapes_fine_panoptic_val", "mapillary_panoptic_val"]
    assert set(names) <= set(DatasetCatalog.list())
    assert MetadataCatalog.get("cityscapes_fine_panoptic_val").domain == "cityscapes"
    assert source_datasets(names, ["cityscapes_fine_panoptic_train"]) == names[:1]
    assert source_datasets(names, ["cityscapes_instance_train"]) == names[:1]
    assert source_datasets(names, ["synthia_panoptic_train"]) == []


def test_instance_targets_score_mask_ap(targets, tmp_path):
    (_, a), (_, b) = targets
    cfg = load_cfg("cityscapes/instance_rein_dinov2_l.yaml", *SMALL_INPUT)
    summary = evaluate_domain_generalization(cfg, GroundTruthModel(a, b), [a, b], str(tmp_path))
    # detectron2's COCOEvaluator scores the boxes too (here the masks' boxes)
    assert summary.columns == ["AP", "AP50", "box_AP", "box_AP50"]
    assert summary.classes == CLASSES[11:] and summary.iou == {}
    for column in summary.columns:
        assert summary.mean(column) == pytest.approx(100), column
    rows = list(csv.reader(open(tmp_path / "dg_summary.csv")))
    assert rows[0] == ["dataset", "domain", "AP", "AP50", "box_AP", "box_AP50"]


def test_panoptic_and_instance_targets_are_not_mixed(targets):
    (pan, inst), _ = targets
    with pytest.raises(ValueError, match="one label space"):
        evaluate_domain_generalization(panoptic_cfg(), GroundTruthModel(pan, inst), [pan, inst])


def test_evaluators_follow_the_test_flags_and_the_dataset_kind(targets, tmp_path):
    (a, _), _ = targets
    evaluator = build_evaluator(panoptic_cfg(), a, str(tmp_path))
    assert [type(e) for e in evaluator._evaluators] == [InProcessPanopticEvaluator, ThingCOCOEvaluator,
                                                       SemSegEvaluator]
    only_pq = panoptic_cfg("MODEL.MASK2FORMER.TEST.SEMANTIC_ON", False, "MODEL.MASK2FORMER.TEST.INSTANCE_ON", False)
    assert type(build_evaluator(only_pq, a, str(tmp_path))) is InProcessPanopticEvaluator
    # detectron2's Cityscapes panoptic datasets have no instances json: cityscapesscripts' AP
    cityscapes_like = f"{a}_cityscapes"
    meta = {k: v for k, v in MetadataCatalog.get(a).as_dict().items() if k not in ("name", "json_file")}
    MetadataCatalog.get(cityscapes_like).set(**dict(meta, evaluator_type="cityscapes_panoptic_seg",
                                                    gt_dir=str(tmp_path)))
    evaluator = build_evaluator(panoptic_cfg("MODEL.MASK2FORMER.TEST.SEMANTIC_ON", False), cityscapes_like)
    assert isinstance(evaluator, DatasetEvaluators)
    assert [type(e) for e in evaluator._evaluators] == [InProcessPanopticEvaluator, CityscapesAPEvaluator]
    nothing = panoptic_cfg("MODEL.MASK2FORMER.TEST.SEMANTIC_ON", False, "MODEL.MASK2FORMER.TEST.INSTANCE_ON",
                           False, "MODEL.MASK2FORMER.TEST.PANOPTIC_ON", False)
    with pytest.raises(ValueError, match="PANOPTIC_ON.*INSTANCE_ON.*SEMANTIC_ON"):
        build_evaluator(nothing, a)


def test_an_instances_json_without_the_things_is_refused(targets):
    (a, _), _ = targets
    wrong = f"{a}_wrong_ids"
    meta = {k: v for k, v in MetadataCatalog.get(a).as_dict().items() if k != "name"}
    meta["thing_dataset_id_to_contiguous_id"] = {11: 11, 26: 13}  # 11: no category of the json
    MetadataCatalog.get(wrong).set(**meta)
    with pytest.raises(ValueError, match=r"thing category ids \[11\].*instances\.json"):
        ThingCOCOEvaluator(wrong)
