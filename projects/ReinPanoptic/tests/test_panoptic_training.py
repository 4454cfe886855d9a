"""Training with the ReinPanoptic configs on CPU: a miniature model fits one tiny frame (the
loss falls, the frozen VFM stays as it was), and train_net.py trains and then scores every
target with PQ, mask AP and mIoU."""
import json
import os

import pytest
import torch
from detectron2.engine import default_argument_parser

from panoptic_testing import (LAYOUTS, MINI, PROJECT, SMALL_INPUT, load_cfg,
                              write_panoptic_dataset)
from rein_d2.engine import ReinTrainer


@pytest.fixture(scope="module")
def one_frame(tmp_path_factory):
    """One frame (a car, a person, a crowd of persons over sky and road), as panoptic and
    instance datasets."""
    return write_panoptic_dataset(str(tmp_path_factory.mktemp("one_frame")), LAYOUTS[:1])


@pytest.mark.parametrize("setting,variant", [("cityscapes/panoptic_rein_dinov2_l.yaml", 0),
                                             ("synthia/instance_rein_dinov2_l.yaml", 1)])
def test_a_few_steps_on_one_frame_lower_the_loss(one_frame, setting, variant, tmp_path):
    torch.manual_seed(0)
    # the same frame every step, no augmentation, a high learning rate: the loss must fall
    cfg = load_cfg(setting, *SMALL_INPUT, "DATASETS.TRAIN", (one_frame[variant],), "DATASETS.TEST", (),
                   "SOLVER.MAX_ITER", 5, "SOLVER.IMS_PER_BATCH", 1, "SOLVER.BASE_LR", 1e-3,
                   "SOLVER.CHECKPOINT_PERIOD", 1000, "OUTPUT_DIR", str(tmp_path))
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model
    frozen = {k: v.clone() for k, v in model.backbone.vit.state_dict().items()}
    tokens = model.backbone.rein.learnable_tokens_a.detach().clone()
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.95 * losses[0] and sum(losses[-2:]) < sum(losses[:2]), losses
    assert all(torch.equal(v, model.backbone.vit.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(tokens, model.backbone.rein.learnable_tokens_a)


def test_train_net_trains_then_scores_every_target(one_frame, tmp_path_factory, tmp_path):
    pytest.importorskip("panopticapi", reason="COCOPanopticEvaluator needs panopticapi")
    target, _ = write_panoptic_dataset(str(tmp_path_factory.mktemp("target")), LAYOUTS[1:], seed=3)
    from rein_panoptic.tools import train_net  # what projects/ReinPanoptic/train_net.py runs
    config = os.path.join(PROJECT, "configs", "cityscapes", "panoptic_rein_dinov2_l.yaml")
    opts = [*map(str, MINI + SMALL_INPUT), "DATASETS.TRAIN", f"('{one_frame[0]}',)",
            "DATASETS.TEST", f"('{target}',)", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "1",
            "OUTPUT_DIR", str(tmp_path), "SOLVER.LIGHT_CHECKPOINTS", "False",  # the random VFM too
            # an untrained model: let its low-scoring segments through so that PQ sees some
            "MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
            "MODEL.MASK2FORMER.TEST.OVERLAP_THRESHOLD", "0.0"]
    train_net.main(default_argument_parser().parse_args(["--config-file", config, *opts]))
    assert (tmp_path / "model_final.pth").is_file()
    summary = json.loads((tmp_path / "inference" / "dg_summary.json").read_text())
    assert summary["targets"] == [target]
    for column in ("PQ", "PQ_th", "PQ_st", "SQ", "RQ", "AP", "AP50", "mIoU"):
        assert 0 <= summary[column][target] <= 100 and f"mean_{column}" in summary, column
    # --eval-only --resume: the trained checkpoint scores the same, and main returns the scores
    results = train_net.main(default_argument_parser().parse_args(
        ["--config-file", config, "--eval-only", "--resume", *opts]))
    assert results[target]["PQ"] == pytest.approx(summary["PQ"][target])
    assert results[target]["mIoU"] == pytest.approx(summary["mIoU"][target])
    assert results["mean_over_targets"]["AP"] == pytest.approx(summary["mean_AP"])
    # rein_d2's own tools/evaluate_dg.py takes the project's config too, and scores the same
    from rein_d2.tools import evaluate_dg
    assert evaluate_dg.main(["--config-file", config, "--output-dir", str(tmp_path / "dg"), *opts,
                             "MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]) == 0
    dg = json.loads((tmp_path / "dg" / "dg_summary.json").read_text())
    assert dg["targets"] == [target] and dg["PQ"][target] == pytest.approx(summary["PQ"][target])
