"""Training through ReinTrainer on a tiny semantic dataset the test writes: the loss falls, an
interrupted run resumes to the same losses, checkpoints are light, and bad runs stop cleanly."""
import os
import shutil
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from rein_d2 import add_rein_config
from rein_d2.engine import LightCheckpointer, ReinTrainer, frozen_keys, param_groups
from conftest import config_path
from test_meta_arch import MINI


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six 64x96 frames: three colour-coded classes in random rectangles."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(6):
        label = np.zeros((64, 96), np.uint8)
        for c in (1, 2):
            y, x = rng.integers(0, 40), rng.integers(0, 70)
            label[y:y + 24, x:x + 26] = c
        image = np.stack([label * 100, 255 - label * 80, np.full_like(label, 90)], -1).astype(np.uint8)
        image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"{i}.png")
        Image.fromarray(label).save(root / f"{i}_label.png")
        dicts.append({"file_name": str(root / f"{i}.png"), "sem_seg_file_name": str(root / f"{i}_label.png"),
                      "height": 64, "width": 96})
    name = f"tiny_train_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255, evaluator_type="sem_seg")
    return name


def make_cfg(dataset, out, *extra):
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path("rein_dinov2.yaml"))
    cfg.merge_from_list(MINI + [
        "DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (), "DATALOADER.NUM_WORKERS", 0,
        "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.CROP.SIZE", [64, 64],
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 5e-3, "SOLVER.MAX_ITER", 6,
        "SOLVER.CHECKPOINT_PERIOD", 3, "SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR",
        "SOLVER.WARMUP_ITERS", 0, "TEST.EVAL_PERIOD", 0, "SEED", 7, "OUTPUT_DIR", str(out), *extra])
    return cfg


def run(cfg, resume=False):
    torch.manual_seed(cfg.SEED)
    np.random.seed(cfg.SEED)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return {it: v for v, it in trainer.storage.history("total_loss").values()}


def test_param_groups_follow_the_reference():
    from test_meta_arch import mini_model
    model = mini_model()
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.05, get_cfg_keys(), 0.1)}
    assert not any(n.startswith("backbone.vit.") for n in groups)  # frozen: not optimised
    no_decay = [n for n, g in groups.items() if g["weight_decay"] == 0]
    assert "backbone.rein.learnable_tokens_a" in no_decay and "backbone.rein.scale" in no_decay
    assert "predictor.level_embed.weight" in no_decay
    # The reference's keys match by substring: the pixel decoder's "level_encoding" decays.
    assert groups["pixel_decoder.level_encoding.weight"]["weight_decay"] == 0.05
    assert "predictor.transformer_decoder.post_norm.weight" in no_decay
    assert groups["backbone.rein.mlp_token2feat.weight"]["weight_decay"] == 0.05
    assert groups["predictor.cls_embed.weight"]["weight_decay"] == 0.05
    full = mini_model("MODEL.VIT.FREEZE", False)
    lrs = {g["name"]: g["lr"] for g in param_groups(full, 1e-4, 0.05, get_cfg_keys(), 0.1)}
    assert lrs["backbone.vit.blocks.0.attn.qkv.weight"] == pytest.approx(1e-5)  # backbone x0.1
    assert lrs["predictor.cls_embed.weight"] == pytest.approx(1e-4)


def get_cfg_keys():
    return list(add_rein_config(get_cfg()).SOLVER.NO_DECAY_KEYS)


def scheduled_lrs(cfg, n):
    from rein_d2.engine import build_lr_scheduler
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


def test_poly_schedule_without_warmup(dataset, tmp_path):
    # mmengine's PolyLR(begin=0, end=10) steps 9 times: 0 on the last iteration, not 1 / 10 ** 0.9
    lrs = scheduled_lrs(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 10), 10)
    assert lrs == pytest.approx([5e-3 * (1 - i / 9) ** 0.9 for i in range(10)], abs=1e-12)
    assert lrs[-1] == 0


def test_poly_schedule_after_warmup_starts_from_the_base_lr(dataset, tmp_path):
    # The reference's LinearLR(start_factor=0.1, begin=0, end=4) then PolyLR(begin=4, end=10):
    # 0.1, 0.4, 0.7, 1 on iterations 0-3, then (1 - k / 5) ** 0.9 for k = 0..5.
    lrs = scheduled_lrs(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 10, "SOLVER.WARMUP_ITERS", 4,
                                 "SOLVER.WARMUP_FACTOR", 0.1, "SOLVER.WARMUP_METHOD", "linear"), 10)
    want = [0.1, 0.4, 0.7, 1.0] + [(1 - k / 5) ** 0.9 for k in range(6)]
    assert lrs == pytest.approx([5e-3 * f for f in want], abs=1e-12)
    # ConstantLR(factor=0.1, begin=0, end=4) restores the lr on its last step, iteration 3
    lrs = scheduled_lrs(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 10, "SOLVER.WARMUP_ITERS", 4,
                                 "SOLVER.WARMUP_FACTOR", 0.1, "SOLVER.WARMUP_METHOD", "constant"), 4)
    assert lrs == pytest.approx([5e-4, 5e-4, 5e-4, 5e-3], abs=1e-12)


def test_training_lowers_the_loss(dataset, tmp_path):
    # 36 iterations: over five seeds the last three losses were 0.45-0.61 of the first three.
    losses = run(make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 36, "SOLVER.CHECKPOINT_PERIOD", 100,
                          "SOLVER.BASE_LR", 1e-2, "INPUT.COLOR_AUG_SSD", False))
    first, last = np.mean([losses[i] for i in range(3)]), np.mean([losses[i] for i in range(33, 36)])
    assert last < 0.7 * first, losses


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_resumes_to_the_same_losses(dataset, tmp_path, workers):
    # With workers, each sample's augmentation draws come from (SEED, its place in the data
    # stream), not from a worker's random stream that a restart would begin anew.
    opts = ("DATALOADER.NUM_WORKERS", workers)
    full = run(make_cfg(dataset, tmp_path / "full", *opts))
    # "Interrupt" after iteration 2: keep only what a run killed then would have left.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(tmp_path / "full" / "model_0000002.pth", cut)
    (cut / "last_checkpoint").write_text("model_0000002.pth")
    resumed = run(make_cfg(dataset, cut, *opts), resume=True)
    assert sorted(resumed) == [3, 4, 5]
    for it in (3, 4, 5):
        assert resumed[it] == full[it], (it, resumed, full)  # bit-exact on CPU


def test_checkpoints_are_light_and_load_on_top_of_the_vfm(dataset, tmp_path):
    cfg = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 3)
    run(cfg)
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert saved["rein_d2_light"] and not any(k.startswith("backbone.vit.") for k in saved["model"])
    assert saved["trainer"]["iteration"] == 2 and "rng" in saved
    assert "optimizer" in saved["trainer"]["_trainer"] and "LRScheduler" in saved["trainer"]["hooks"]
    assert not list(tmp_path.glob("*.tmp"))
    # Eval-style load: VFM from MODEL.WEIGHTS, trained part from MODEL.TRAINED_WEIGHTS.
    from rein_d2.engine import load_model_weights
    vfm = tmp_path / "vfm.pth"
    model = ReinTrainer.build_model(cfg)
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k.startswith("backbone.vit.")}}, vfm)
    cfg2 = cfg.clone()
    cfg2.MODEL.WEIGHTS, cfg2.MODEL.TRAINED_WEIGHTS = str(vfm), str(tmp_path / "model_final.pth")
    fresh = ReinTrainer.build_model(cfg2)
    load_model_weights(cfg2, fresh)
    for k, v in saved["model"].items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # A light file alone would leave the VFM random: refused, saying what to do.
    cfg2.MODEL.WEIGHTS, cfg2.MODEL.TRAINED_WEIGHTS = str(tmp_path / "model_final.pth"), ""
    with pytest.raises(ValueError, match="MODEL.TRAINED_WEIGHTS"):
        load_model_weights(cfg2, ReinTrainer.build_model(cfg2))


def test_dinov2_large_checkpoint_size_is_trainable_weights_plus_adamw_state(tmp_path):
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path("rein_dinov2.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = ReinTrainer.build_model(cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    opt.step()  # creates exp_avg and exp_avg_sq for every trainable weight
    LightCheckpointer(model, str(tmp_path), optimizer=opt).save("ckpt")
    saved = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    assert not set(frozen_keys(model)) & set(saved["model"])
    expected = 3 * 4 * sum(p.numel() for p in trainable)  # weights + two moments, float32
    size = os.path.getsize(tmp_path / "ckpt.pth")
    assert abs(size - expected) <= 0.1 * expected, (size, expected)
    assert size < 0.25 * 4 * sum(p.numel() for p in model.parameters())  # far below a full file


def test_non_finite_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(dataset, tmp_path):
    cfg = make_cfg(dataset, tmp_path, "SOLVER.MAX_ITER", 8)
    torch.manual_seed(0)
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)

    from detectron2.engine import HookBase

    class Poison(HookBase):
        def after_step(self):
            if self.trainer.iter == 3:  # after the checkpoint of iteration 2
                with torch.no_grad():
                    self.trainer.model.predictor.cls_embed.weight.fill_(float("nan"))

    trainer.register_hooks([Poison()])
    with pytest.raises(FloatingPointError, match="iteration=4.*diverged"):
        trainer.train()
    good = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
