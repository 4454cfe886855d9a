"""Predictions in the benchmark servers' formats (tools/predict.py): the train-id -> label-id
round trip, cityscapesscripts' own evaluation scoring a folder written from the ground truth at
100, the ACDC and BDD100K layouts, resume, and the refusal to write among the inputs."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import config_path
from rein_d2.data.datasets import ID_TO_TRAINID
from rein_d2.evaluation.submission import TRAINID_TO_ID, prediction_path, to_submission, write_prediction
from rein_d2.tools import predict
from test_meta_arch import MINI

CITIES = {"frankfurt": ["000000_000294", "000001_005898"], "lindau": ["000000_000019"]}


def test_train_ids_map_back_to_cityscapes_label_ids_and_round_trip():
    train_ids = np.array(list(range(19)) + [255], np.uint8)
    label_ids = to_submission("cityscapes", train_ids)
    assert label_ids.tolist() == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0]
    assert ID_TO_TRAINID[label_ids].tolist() == train_ids.tolist()  # ignore -> 0 "unlabeled" -> ignore
    assert (TRAINID_TO_ID[:19] == label_ids[:19]).all()
    assert to_submission("bdd100k", train_ids).tolist() == train_ids.tolist()


def test_cityscapesscripts_scores_a_folder_written_from_the_ground_truth_at_100(tmp_path):
    """Miniature gtFine/val in the official layout; predictions written by the submission
    writer from its train ids; cityscapesscripts' evaluation finds and scores every one."""
    cs_eval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for city, frames in CITIES.items():
        for frame in frames:
            label_ids = rng.choice([0, 7, 8, 11, 21, 23, 24, 26, 33], size=(32, 64)).astype(np.uint8)
            gt = tmp_path / "gtFine" / "val" / city / f"{city}_{frame}_gtFine_labelIds.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label_ids).save(gt)
            rel = os.path.join(city, f"{city}_{frame}_leftImg8bit.png")
            write_prediction("cityscapes", ID_TO_TRAINID[label_ids].astype(np.uint8),
                             str(tmp_path / "pred" / prediction_path("cityscapes", rel)))
            gts.append(str(gt))
    args = cs_eval.args
    args.predictionPath, args.predictionWalk = str(tmp_path / "pred"), None
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    preds = [cs_eval.getPrediction(args, gt) for gt in gts]  # the server's own file matching
    result = cs_eval.evaluateImgLists(preds, gts, args)
    scores = [v for v in result["classScores"].values() if not np.isnan(v)]
    assert len(scores) == 8 and all(s == pytest.approx(1.0) for s in scores)
    assert result["averageScoreClasses"] == pytest.approx(1.0)
    # the layout the server expects: one folder per city, the image's name
    assert sorted(os.listdir(tmp_path / "pred")) == ["frankfurt", "lindau"]
    assert os.listdir(tmp_path / "pred" / "lindau") == ["lindau_000000_000019_leftImg8bit.png"]


def test_predict_tool_writes_each_format_resumes_and_keeps_off_the_inputs(tmp_path, capsys):
    """ACDC's layout below the input root, BDD's train ids, resume, colour, and refusals."""
    root = tmp_path / "rgb_anon"
    for rel in ("fog/test/GOPR0475/GOPR0475_frame_000041_rgb_anon.png",
                "night/test/GP010376/GP010376_frame_000105_rgb_anon.png"):
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(root / rel)
    base = ["--config-file", config_path("rein_dinov2.yaml"), "--input", str(root)]
    opts = [*map(str, MINI), "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()"]
    out = tmp_path / "acdc_pred"
    assert predict.main(base + ["--format", "acdc", "--output", str(out), "--color", str(tmp_path / "c"),
                               "--batch-size", "2", *opts]) == 0
    pred = out / "fog/test/GOPR0475/GOPR0475_frame_000041_rgb_anon.png"
    ids = np.array(Image.open(pred))
    assert ids.shape == (64, 96) and set(np.unique(ids)) <= set(TRAINID_TO_ID[:19].tolist())
    assert (tmp_path / "c/night/test/GP010376/GP010376_frame_000105_rgb_anon.png").exists()
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    os.remove(pred)  # an interrupted run: only the missing one is predicted again
    assert predict.main(base + ["--format", "acdc", "--output", str(out), *opts]) == 0
    printed = capsys.readouterr().out
    assert "1 already predicted" in printed and "wrote 1 prediction(s)" in printed and pred.exists()

    assert predict.main(base + ["--format", "bdd100k", "--output", str(tmp_path / "bdd"), *opts]) == 0
    bdd = np.array(Image.open(tmp_path / "bdd/fog/test/GOPR0475/GOPR0475_frame_000041_rgb_anon.png"))
    assert bdd.max() <= 18

    assert predict.main(base + ["--format", "trainid", "--output", str(root / "fog"), *opts]) == 2
    assert "holds the inputs" in capsys.readouterr().err
