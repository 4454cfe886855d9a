"""ReinMask2Former end to end on a miniature configuration (semantic segmentation)."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from rein_d2 import add_rein_config
from conftest import config_path

# The miniature architecture (a 4-block, 64-wide ViT; a 3-layer, 32-wide head with 10 linked
# queries), shared with the projects' tests.
MINI_ARCH = [
    "MODEL.VIT.SIZE", "small", "MODEL.VIT.EMBED_DIM", 64, "MODEL.VIT.DEPTH", 4,
    "MODEL.VIT.NUM_HEADS", 2, "MODEL.VIT.IMG_SIZE", 64,
    "MODEL.REIN.TOKEN_LENGTH", 10, "MODEL.REIN.LORA_DIM", 4, "MODEL.REIN.QUERY_DIM", 32,
    "MODEL.MASK2FORMER.HIDDEN_DIM", 32, "MODEL.MASK2FORMER.NUM_QUERIES", 10,
    "MODEL.MASK2FORMER.NHEADS", 4, "MODEL.MASK2FORMER.DEC_LAYERS", 3,
    "MODEL.MASK2FORMER.DIM_FEEDFORWARD", 64, "MODEL.MASK2FORMER.ENC_LAYERS", 1,
    "MODEL.MASK2FORMER.ENC_DIM_FEEDFORWARD", 64, "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", 256,
]
MINI = MINI_ARCH + [
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3, "MODEL.DEVICE", "cpu",
    "MODEL.MASK2FORMER.TEST.MODE", "whole",  # the configs' sliding windows are for 512 crops
    "MODEL.ALLOW_RANDOM_WEIGHTS", True,  # no pretrained VFM offline
]


def mini_model(*opts):
    """The miniature model, with config overrides ``opts`` (KEY, VALUE, ...)."""
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path("rein_dinov2.yaml"))
    cfg.merge_from_list(MINI + list(opts))
    return build_model(cfg)


def sample(h=64, w=96):
    image = torch.rand(3, h, w) * 255
    seg = torch.zeros(h, w, dtype=torch.long)
    seg[:, w // 3:] = 1
    seg[h // 2:, 2 * w // 3:] = 2
    seg[:4] = 255
    image[:, seg == 1] *= 0.3  # make the classes separable by colour
    return {"image": image, "sem_seg": seg, "height": h, "width": w}


def test_losses_are_finite_with_gradients_only_where_expected():
    model = mini_model().train()
    losses = model([sample(), sample(64, 64)])
    assert {"loss_cls", "loss_mask", "loss_dice", "d0.loss_cls", "d2.loss_dice"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone.vit."):
            assert p.grad is None, name
    assert model.backbone.rein.learnable_tokens_b.grad.abs().sum() > 0
    assert model.predictor.querys2feat.weight.grad.abs().sum() > 0


def test_semantic_inference_format():
    model = mini_model().eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 50, 70) * 255, "height": 100, "width": 140}])
    assert out[0]["sem_seg"].shape == (3, 100, 140)


def test_a_few_steps_lower_the_loss():
    model = mini_model().train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    batch = [sample()]
    history = []
    for _ in range(15):
        torch.manual_seed(1)  # the same sampled points every step: a fair comparison
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.85 * history[0], history


def test_any_detectron2_backbone_uses_learned_queries():
    """A ResNet from detectron2's own registry: no linked queries, so the decoder learns its
    own (query_feat / query_embed), and training and inference work as with Rein."""
    model = mini_model("MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.DEPTH", 18,
                       "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                       "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
                       "MODEL.PIXEL_MEAN", [123.675, 116.28, 103.53])
    assert not hasattr(model.backbone, "linked_queries")
    assert hasattr(model.predictor, "query_feat") and not hasattr(model.predictor, "querys2feat")
    losses = model.train()([sample()])
    sum(losses.values()).backward()
    assert model.predictor.query_feat.weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()([{"image": torch.rand(3, 64, 96) * 255}])
    assert out[0]["sem_seg"].shape == (3, 64, 96)


def test_bfloat16_autocast_inference_stays_close_to_float32():
    """TEST.AUTOCAST bfloat16: the network runs in bfloat16, the scores come back in float32
    and within bfloat16's precision of the float32 ones."""
    torch.manual_seed(0)
    exact = mini_model().eval()
    fast = mini_model("MODEL.MASK2FORMER.TEST.AUTOCAST", "bfloat16").eval()
    fast.load_state_dict(exact.state_dict())
    x = sample()
    with torch.no_grad():
        a, b = exact([x])[0]["sem_seg"], fast([x])[0]["sem_seg"]
    assert b.dtype == torch.float32 and b.shape == a.shape
    diff = (a - b).abs().max().item()
    assert 0 < diff < 0.05 * a.abs().max().item()  # bfloat16 did run, and stayed close


def test_compiled_model_keeps_its_keys_and_computes_the_eager_numbers(monkeypatch):
    """MODEL.COMPILE: backbone, pixel decoder and query decoder go through torch.compile (traced
    with aot_eager here, inductor's code generation being minutes on CPU) in place: the same
    state-dict keys, so eager checkpoints load, and the eager model's losses, gradients and
    inference scores."""
    import rein_d2.modeling.meta_arch as meta_arch

    monkeypatch.setattr(meta_arch, "COMPILE_BACKEND", "aot_eager")
    torch.manual_seed(0)
    eager = mini_model().train()
    compiled = mini_model("MODEL.COMPILE", "default").train()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
    assert compiled.pixel_decoder._compiled_call_impl is not None and eager.pixel_decoder._compiled_call_impl is None
    x = [sample(), sample()]
    for model in (eager, compiled):
        torch.manual_seed(1)  # the criterion's point sampling
        loss = sum(model(x).values())
        loss.backward()
        model.loss = loss.item()
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    image = sample()
    with torch.no_grad():
        a, b = (m.eval()([image])[0]["sem_seg"] for m in (eager, compiled))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_compile_mode_is_checked_at_load():
    from rein_d2 import load_config
    from rein_d2.utils.cli import UserError

    with pytest.raises(UserError, match="MODEL.COMPILE is 'fast'; expected one of , default"):
        load_config(config_path("rein_dinov2.yaml"), ["MODEL.COMPILE", "fast"])
