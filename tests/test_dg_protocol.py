"""The evaluation protocol: the record in every dg_summary.json (whole, slide and TTA runs), the
per-run evaluation size, the two mIoU conventions and the SYNTHIA class subsets, each against
figures computed by hand."""
import hashlib
import json
import subprocess
from importlib import metadata

import numpy as np
import pytest
import torch

from conftest import REPO, config_path
from rein_d2 import load_config
from rein_d2.data.datasets.common import CITYSCAPES_CLASSES
from rein_d2.engine import ReinTrainer
from rein_d2.evaluation import DGSummary, evaluate_domain_generalization
from rein_d2.evaluation.miou import iou_per_class, subset_miou
from rein_d2.evaluation.protocol import code_version, model_sha256
from rein_d2.evaluation.robustness import evaluate_robustness
from rein_d2.utils.cli import UserError
from rein_d2.tools import evaluate_dg
from test_dg_evaluation import RedIsClassB, register, target_a, target_b
from test_meta_arch import MINI


def mini_cfg(*opts):
    return load_config(config_path("rein_dinov2.yaml"), [*MINI, "DATALOADER.NUM_WORKERS", 0, *opts])


def record(out):
    return json.loads((out / "dg_summary.json").read_text())["protocol"]


def test_whole_run_records_sizes_inference_labels_weights_code_and_seed(tmp_path):
    a, b = target_a(tmp_path), target_b(tmp_path)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"rein weights")
    cfg = mini_cfg("SEED", 7, "MODEL.WEIGHTS", str(weights), "MODEL.MASK2FORMER.TEST.MODE", "whole")
    model = RedIsClassB()
    summary = evaluate_domain_generalization(cfg, model, [a, b], str(tmp_path / "out"))
    run, targets = record(tmp_path / "out")["run"], record(tmp_path / "out")["targets"]
    assert targets[a] == {"evaluation_size": [32, 16], "evaluation_size_from": "registered", "mode": "whole",
                          "tta": None, "label_resolution": "as stored", "class_set": "3 classes",
                          "miou_convention": "detectron2", "scored_as": "sem_seg"}
    assert targets[b]["evaluation_size"] == "native"
    assert run["seed"] == 7 and run["classes"] == ["a", "b", "c"] and run["class_subsets"] == {}
    assert run["weight_files"] == [{"path": str(weights), "sha256": hashlib.sha256(b"rein weights").hexdigest()}]
    assert run["model_sha256"] == model_sha256(model) and len(run["config_sha256"]) == 64
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if git.returncode == 0:  # a git checkout: its revision, "-dirty" with local changes
        assert run["rein_d2"]["git_revision"].split("-")[0] == git.stdout.strip()
    try:  # the installed package's version, where pip installed it
        assert run["rein_d2"]["version"] == metadata.version("rein_d2")
    except metadata.PackageNotFoundError:
        assert run["rein_d2"]["version"].startswith("unknown")
    # the printed table opens with the record
    table = summary.table()
    assert table.startswith("protocol: seed 7") and "32x16 (registered)" in table
    assert "native (registered)" in table and f"sha256 {run['weight_files'][0]['sha256'][:12]}" in table


def test_outside_a_git_checkout_the_record_says_so(tmp_path):
    assert code_version(str(tmp_path))["git_revision"] == "not a git checkout"


def test_another_seed_changes_the_config_hash_but_not_the_setting(tmp_path):
    b = target_b(tmp_path)
    runs = [evaluate_domain_generalization(mini_cfg("SEED", s, "OUTPUT_DIR", str(tmp_path / str(s))),
                                           RedIsClassB(), [b]).protocol["run"] for s in (1, 2)]
    other = evaluate_domain_generalization(mini_cfg("SOLVER.BASE_LR", 0.5), RedIsClassB(), [b]).protocol["run"]
    assert runs[0]["setting_sha256"] == runs[1]["setting_sha256"] != other["setting_sha256"]
    assert runs[0]["config_sha256"] != runs[1]["config_sha256"]


def test_slide_run_records_the_model_windows_and_the_eval_size_override(tmp_path):
    b = target_b(tmp_path)  # 48x48, registered without an evaluation size
    cfg = mini_cfg("MODEL.MASK2FORMER.TEST.MODE", "slide", "MODEL.MASK2FORMER.TEST.CROP_SIZE", (32, 32),
                   "MODEL.MASK2FORMER.TEST.STRIDE", (16, 24), "TEST.EVAL_SIZE", (64, 64))
    model = ReinTrainer.build_model(cfg).eval()
    with torch.no_grad():
        evaluate_domain_generalization(cfg, model, [b], str(tmp_path / "out"))
    t = record(tmp_path / "out")["targets"][b]
    assert (t["mode"], t["crop"], t["stride"]) == ("slide", [32, 32], [16, 24])
    assert t["evaluation_size"] == [64, 64] and t["evaluation_size_from"] == "TEST.EVAL_SIZE"


def test_eval_size_override_resizes_every_target(tmp_path):
    a, b = target_a(tmp_path), target_b(tmp_path)
    model = RedIsClassB()
    evaluate_domain_generalization(mini_cfg("TEST.EVAL_SIZE", (16, 8)), model, [a, b])
    assert model.seen == [(8, 16), (8, 16), (8, 8)]  # not a's registered 32x16 nor b's 48x48


def test_tta_run_writes_its_own_summary_with_the_augmentations(tmp_path):
    b = target_b(tmp_path)
    cfg = mini_cfg("OUTPUT_DIR", str(tmp_path), "DATASETS.TEST", (b,), "TEST.AUG.MIN_SIZES", (64,),
                   "TEST.AUG.FLIP", True)
    model = ReinTrainer.build_model(cfg).eval()
    results = ReinTrainer.test_with_TTA(cfg, model, weight_files=[])
    assert f"{b}_TTA" in results
    t = record(tmp_path / "inference_TTA")["targets"][b]
    assert t["tta"] == {"min_sizes": [64], "max_size": cfg.TEST.AUG.MAX_SIZE, "flip": True}
    assert t["mode"] == "whole"
    assert not (tmp_path / "inference").exists()  # the plain run's summary is not overwritten
    protocol = record(tmp_path / "inference_TTA")
    assert "| sizes 64 + flip |" in DGSummary(protocol["run"]["classes"], protocol=protocol).protocol_table()


# --- mIoU conventions -----------------------------------------------------------------------

def test_conventions_differ_on_a_class_predicted_but_absent_from_the_labels(tmp_path):
    """Target A: class a predicted on 32 columns but in no label; b IoU 32/48; c never
    predicted. Target B: a IoU 24/48, b 0, c neither in labels nor predicted."""
    a, b = target_a(tmp_path), target_b(tmp_path)
    d2 = evaluate_domain_generalization(mini_cfg(), RedIsClassB(), [a, b])
    mm = evaluate_domain_generalization(mini_cfg("TEST.MIOU_CONVENTION", "mmseg"), RedIsClassB(), [a, b],
                                        str(tmp_path / "mm"))
    assert d2.miou[a] == pytest.approx(100 * (2 / 3) / 2)       # (66.7 + 0) / 2: a left out
    assert mm.miou[a] == pytest.approx(100 * (2 / 3) / 3)       # (0 + 66.7 + 0) / 3: a counts 0
    assert np.isnan(d2.iou[a][0]) and mm.iou[a][0] == 0
    assert d2.miou[b] == mm.miou[b] == pytest.approx(25)        # c: NaN in both
    assert np.isnan(mm.iou[b][2])
    assert mm.mean_miou == pytest.approx((100 * 2 / 9 + 25) / 2)
    assert mm.macc == d2.macc and mm.aacc == d2.aacc            # accuracies do not depend on it
    t = record(tmp_path / "mm")["targets"][a]
    assert t["miou_convention"] == "mmseg"
    # the corruption evaluation's clean mIoU follows the key too
    robust = evaluate_robustness(mini_cfg("TEST.MIOU_CONVENTION", "mmseg"), RedIsClassB(), a, [], [])
    assert robust.clean == pytest.approx(100 * (2 / 3) / 3)


def test_iou_per_class_from_a_confusion_matrix_by_hand():
    # rows: prediction, columns: label, last: ignored pixels
    conf = np.array([[5, 1, 0, 9],
                     [0, 3, 0, 9],
                     [2, 0, 0, 9],
                     [9, 9, 0, 9]])
    d2, mm = iou_per_class(conf, "detectron2"), iou_per_class(conf, "mmseg")
    np.testing.assert_allclose(d2, [100 * 5 / 8, 100 * 3 / 4, np.nan])
    np.testing.assert_allclose(mm, [100 * 5 / 8, 100 * 3 / 4, 0])  # class 2: predicted twice


# --- class subsets --------------------------------------------------------------------------

class RedIsClass(torch.nn.Module):
    """Predicts the class whose id is the red value, at the size it is given."""

    def forward(self, inputs):
        out = []
        for x in inputs:
            pred = torch.nn.functional.one_hot(x["image"][0].long(), 19).permute(2, 0, 1).float()
            out.append({"sem_seg": torch.nn.functional.interpolate(pred[None], size=(x["height"], x["width"]))[0]})
        return out


def test_synthia_subsets_against_hand_computed_figures(tmp_path):
    """19 stripes of 4 columns, one per class; the model is right except: terrain predicted as
    vegetation (vegetation 4/8, terrain 0) and half of wall as building (wall 2/4, building 4/6)."""
    label = np.repeat(np.arange(19, dtype=np.uint8), 4)[None].repeat(8, 0)
    pred = label.copy()
    pred[label == 9] = 8
    pred[:, 12:14] = 2  # the wall stripe is columns 12-15
    image = np.stack([pred, np.zeros_like(pred), np.zeros_like(pred)], -1)
    name = register(tmp_path, [image], [label], None, classes=list(CITYSCAPES_CLASSES))
    cfg = mini_cfg("TEST.CLASS_SUBSETS", ["synthia16", "synthia13"])
    summary = evaluate_domain_generalization(cfg, RedIsClass(), [name], str(tmp_path / "out"))
    iou_19 = (15 * 100 + 50 + 0 + 50 + 100 * 4 / 6) / 19
    iou_16 = (13 * 100 + 50 + 50 + 100 * 4 / 6) / 16  # less terrain, truck, train
    iou_13 = (11 * 100 + 50 + 100 * 4 / 6) / 13       # also less wall, fence, pole
    assert summary.miou[name] == pytest.approx(iou_19)
    assert summary.subset_miou["mIoU16"][name] == pytest.approx(iou_16)
    assert summary.subset_miou["mIoU13"][name] == pytest.approx(iou_13)
    data = json.loads((tmp_path / "out" / "dg_summary.json").read_text())
    assert data["mean_mIoU16"] == pytest.approx(iou_16) and data["mIoU13"][name] == pytest.approx(iou_13)
    subsets = data["protocol"]["run"]["class_subsets"]
    assert len(subsets["synthia16"]["classes"]) == 16 and len(subsets["synthia13"]["classes"]) == 13
    assert {"terrain", "truck", "train", "wall", "fence", "pole"}.isdisjoint(subsets["synthia13"]["classes"])
    assert data["protocol"]["targets"][name]["class_set"] == "19 classes, mIoU16, mIoU13"
    assert summary.columns == ["mIoU", "mIoU16", "mIoU13", "mAcc", "aAcc"]
    assert "mIoU16" in summary.table()


def test_a_subset_outside_the_label_space_and_bad_keys_are_refused(tmp_path):
    b = target_b(tmp_path)  # classes a, b, c
    with pytest.raises(ValueError, match="synthia16 .mIoU16. needs the Cityscapes classes"):
        evaluate_domain_generalization(mini_cfg("TEST.CLASS_SUBSETS", ["synthia16"]), RedIsClassB(), [b])
    with pytest.raises(UserError, match="TEST.CLASS_SUBSETS holds 'synthia19'"):
        mini_cfg("TEST.CLASS_SUBSETS", ["synthia19"])
    with pytest.raises(UserError, match="TEST.MIOU_CONVENTION is 'mmcv'"):
        mini_cfg("TEST.MIOU_CONVENTION", "mmcv")
    with pytest.raises(UserError, match=r"TEST.EVAL_SIZE is \(2048,\); expected \(\) or \(W, H\)"):
        mini_cfg("TEST.EVAL_SIZE", (2048,))
    assert np.isnan(subset_miou([float("nan")] * 19, CITYSCAPES_CLASSES, "synthia13"))  # all left out


def test_evaluate_dg_eval_size_flag(tmp_path, capsys):
    b = target_b(tmp_path)
    out = tmp_path / "dg"
    assert evaluate_dg.main(["--config-file", config_path("rein_dinov2.yaml"), "--datasets", b,
                             "--eval-size", "64", "64", "--output-dir", str(out), *map(str, MINI),
                             "DATALOADER.NUM_WORKERS", "0", "TEST.MIOU_CONVENTION", "mmseg"]) == 0
    t = record(out)["targets"][b]
    assert t["evaluation_size"] == [64, 64] and t["miou_convention"] == "mmseg"
    assert "64x64 (TEST.EVAL_SIZE)" in capsys.readouterr().out


def test_builtin_targets_record_their_label_resolution():
    """Mapillary's two validation names: the reference's halved labels and the full ones."""
    from rein_d2.evaluation.protocol import target_record

    cfg = mini_cfg()
    record_of = {n: target_record(cfg, n, (1024, 512), "registered", {"mode": "whole", "tta": None},
                                  list(CITYSCAPES_CLASSES), "sem_seg")["label_resolution"]
                 for n in ("mapillary_val", "mapillary_val_full", "cityscapes_rein_val")}
    assert record_of["mapillary_val"].startswith("half (datasets/prepare_mapillary.py")
    assert record_of["mapillary_val_full"] == record_of["cityscapes_rein_val"] == "full"
