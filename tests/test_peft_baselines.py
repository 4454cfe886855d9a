"""The baselines Rein is compared with (frozen, full fine-tuning, LoRA on qkv, VPT-deep) and
activation checkpointing of the blocks, on miniature models."""
import math

import pytest
import torch
from detectron2.config import get_cfg

from rein_d2 import add_rein_config
from rein_d2.checkpoint import convert_official_checkpoint, load_official_checkpoint
from rein_d2.engine import frozen_keys, light_state_dict, param_groups
from rein_d2.modeling import ReinViT
from rein_d2.modeling.backbone import VFM_ARCHS
from rein_d2.modeling.backbone.peft import LoRALinear, lora_parameter_names
from test_convert_official import FORMATS, write_official
from test_meta_arch import mini_model, sample

C, DEPTH, R = 64, 4, 4  # the mini model's width and depth; the LoRA rank used here
NO_REIN = ("MODEL.REIN.ENABLED", False)
LORA = ("MODEL.VIT.LORA_RANK", R)
TINY = dict(embed_dim=C, depth=DEPTH, num_heads=2)  # as test_convert_official.MINI
SAM_LAYOUT = dict(global_attn_indexes=(1, 3), window_size=2)


def tiny_backbone(family, size="large", **kwargs):
    """A ReinViT of another family at the mini size (SAM: global blocks 1 and 3)."""
    sam = family == "sam"
    return ReinViT(arch=VFM_ARCHS[(family, "base" if sam else size)], img_size=64,
                   out_indices=[0, 1, 2, 3] if sam else None,
                   timm_overrides=dict(TINY, **(SAM_LAYOUT if sam else {})), **kwargs)


def like_pretrained(model):
    """Layer scales of 1 instead of DINOv2's 1e-5 initialisation (trained DINOv2 layer scales
    are far from it), so that what happens inside the blocks shows in the features."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(1.0)
    return model


def backbone_trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}


def features(backbone, x):
    with torch.no_grad():
        return torch.cat([f.flatten() for f in backbone(x).values()])


def loss_and_backward(model, batch, seed=1):
    torch.manual_seed(seed)  # the same sampled points for every model compared
    loss = sum(model(batch).values())
    loss.backward()
    return loss.detach()


def no_decay_keys():
    return list(add_rein_config(get_cfg()).SOLVER.NO_DECAY_KEYS)


# -- LoRA ------------------------------------------------------------------------------------
def test_lora_starts_as_the_frozen_model_and_loads_vfm_checkpoints():
    plain = like_pretrained(mini_model(*NO_REIN)).eval()
    lora = mini_model(*NO_REIN, *LORA).eval()
    state = plain.state_dict()  # the converted layout: backbone.vit.blocks.N.attn.qkv.weight
    assert "backbone.vit.blocks.0.attn.qkv.weight" in state
    missing, unexpected = lora.load_state_dict(state, strict=False)
    lora_keys = {f"backbone.vit.blocks.{i}.attn.qkv.lora_{ab}.weight" for i in range(DEPTH)
                 for ab in "ab"}
    assert set(missing) == lora_keys and unexpected == []

    x = torch.randn(2, 3, 64, 96)
    assert torch.equal(features(lora.backbone, x), features(plain.backbone, x))  # B = 0
    for blk in lora.backbone.vit.blocks:
        torch.nn.init.normal_(blk.attn.qkv.lora_b.weight, std=0.1)
    assert not torch.allclose(features(lora.backbone, x), features(plain.backbone, x), atol=1e-3)


@pytest.mark.parametrize("rein", [False, True], ids=["lora", "rein+lora"])
def test_lora_trains_only_its_factors_and_is_saved_and_optimised(rein):
    model = mini_model(*LORA, "MODEL.REIN.ENABLED", rein).train()
    lora = lora_parameter_names(model)
    assert len(lora) == 2 * DEPTH
    rein_names = {n for n in backbone_trainable(model) if n.startswith("backbone.rein.")}
    assert backbone_trainable(model) == lora | rein_names and bool(rein_names) == rein
    n_lora = sum(p.numel() for n, p in model.named_parameters() if n in lora)
    assert n_lora == DEPTH * R * (C + 3 * C)  # A: C -> r, B: r -> 3C, per block

    light = light_state_dict(model)
    assert lora <= set(light) and not lora & set(frozen_keys(model))
    assert not [k for k in light if k.startswith("backbone.vit.") and k not in lora]

    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.05, no_decay_keys(), 0.1)}
    for name in lora:  # new weights: decayed, at the full learning rate (no backbone x0.1)
        assert groups[name]["weight_decay"] == 0.05 and groups[name]["lr"] == pytest.approx(1e-4)

    loss_and_backward(model, [sample()])
    for blk in model.backbone.vit.blocks:
        assert blk.attn.qkv.lora_b.weight.grad.abs().sum() > 0  # A's gradient is 0 while B = 0
        assert blk.attn.qkv.weight.grad is None


@pytest.mark.parametrize("family", ["clip", "mae", "eva02", "sam"])
def test_lora_on_every_family(family):
    """Fused qkv everywhere but EVA02, whose separate q/k/v projections get one update each."""
    plain = tiny_backbone(family).eval()
    lora = tiny_backbone(family, lora_rank=R).eval()
    missing, unexpected = lora.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == lora_parameter_names(lora) and unexpected == []
    projections = 3 if family == "eva02" else 1
    assert sum(isinstance(m, LoRALinear) for m in lora.modules()) == DEPTH * projections
    out_dim = C if family == "eva02" else 3 * C
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trainable == DEPTH * projections * R * (C + out_dim)

    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(features(lora, x), features(plain, x), atol=1e-6)
    for m in lora.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b.weight, std=0.1)
    assert not torch.allclose(features(lora, x), features(plain, x), atol=1e-3)


@pytest.mark.parametrize("name", FORMATS)
def test_official_checkpoints_convert_for_a_lora_backbone(name, tmp_path):
    """The converter fills the VFM and does not ask the official file for the LoRA factors."""
    fmt = FORMATS[name]
    write_official(fmt, tmp_path / "official.pth")
    backbone = tiny_backbone(fmt.arch[0], lora_rank=R)
    converted, report = convert_official_checkpoint(
        load_official_checkpoint(str(tmp_path / "official.pth")), backbone)
    assert report.missing == []
    missing, unexpected = backbone.vit.load_state_dict(converted, strict=False)
    assert set(missing) == lora_parameter_names(backbone.vit) and unexpected == []


# -- VPT-deep ----------------------------------------------------------------------------------
def test_vpt_prompts_are_per_block_trained_and_saved():
    n = 5
    model = mini_model(*NO_REIN, "MODEL.VIT.VPT_TOKENS", n).train()
    prompts = model.backbone.vpt_prompts
    assert prompts.shape == (DEPTH, n, C)
    assert prompts.abs().max() <= math.sqrt(6 / (3 * 16**2 + C))
    assert backbone_trainable(model) == {"backbone.vpt_prompts"}
    assert "backbone.vpt_prompts" in light_state_dict(model)
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.05, no_decay_keys(), 0.1)}
    assert groups["backbone.vpt_prompts"]["weight_decay"] == 0.05

    loss_and_backward(model, [sample()])
    grad = prompts.grad.flatten(1).abs().sum(1)
    assert grad[0] > 0 and grad[-1] > 0  # first and last block

    backbone = like_pretrained(model.backbone).eval()
    x = torch.randn(2, 3, 64, 96)
    plain_shapes = {k: v.shape for k, v in mini_model(*NO_REIN).backbone(x).items()}
    assert {k: v.shape for k, v in backbone(x).items()} == plain_shapes
    before = features(backbone, x)
    with torch.no_grad():
        prompts[0, 0] += torch.randn(C)  # not a constant: the block's LayerNorm removes it
    assert not torch.allclose(features(backbone, x), before, atol=1e-4)


def test_vpt_combines_with_rein_and_registers():
    model = mini_model("MODEL.VIT.VPT_TOKENS", 3, "MODEL.VIT.NUM_REGISTERS", 4).train()
    assert model.backbone.num_prefix_tokens == 5  # Rein skips cls + registers, not the prompts
    loss_and_backward(model, [sample()])
    assert model.backbone.vpt_prompts.grad.abs().sum() > 0
    assert model.backbone.rein.learnable_tokens_b.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["eva02", "sam"])
def test_vpt_is_refused_for_rotary_and_windowed_models(family):
    with torch.device("meta"), pytest.raises(ValueError, match="VPT .* DINOv2/CLIP/MAE only"):
        tiny_backbone(family, vpt_tokens=4)


# -- baselines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("opts,trained", [
    (NO_REIN, lambda n: False),  # frozen VFM: only the head trains
    ((*NO_REIN, "MODEL.VIT.FREEZE", False), lambda n: n.startswith("backbone.vit.")),
    ((*NO_REIN, *LORA), lambda n: ".lora_" in n),
    ((*NO_REIN, "MODEL.VIT.VPT_TOKENS", 2), lambda n: n == "backbone.vpt_prompts"),
], ids=["frozen", "full", "lora", "vpt"])
def test_baselines_build_with_learned_queries_and_train(opts, trained):
    """Without Rein the head learns its own queries: MODEL.REIN.LINK_TOKEN_TO_QUERY (True by
    default) needs no change."""
    model = mini_model(*opts).train()
    assert model.backbone.linked_queries() is None and hasattr(model.predictor, "query_feat")
    names = {n for n, _ in model.backbone.named_parameters(prefix="backbone")}
    assert backbone_trainable(model) == {n for n in names if trained(n)}
    loss = loss_and_backward(model, [sample()])
    assert torch.isfinite(loss)
    assert model.predictor.query_feat.weight.grad.abs().sum() > 0


# -- activation checkpointing ----------------------------------------------------------------
@pytest.fixture
def checkpoint_calls(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, **kwargs):
        if getattr(fn, "__name__", "").endswith("_step"):  # a backbone block (not the head's sampling)
            calls.append(kwargs.get("use_reentrant"))
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


def twin(*opts):
    """The same model (same weights) without and with CHECKPOINT_BLOCKS."""
    plain = mini_model(*opts)
    ckpt = mini_model(*opts, "MODEL.VIT.CHECKPOINT_BLOCKS", -1)
    ckpt.load_state_dict(plain.state_dict())
    return plain, ckpt


@pytest.mark.parametrize("opts", [(), (*LORA, "MODEL.VIT.VPT_TOKENS", 2)], ids=["rein", "rein+lora+vpt"])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(opts, checkpoint_calls):
    plain, ckpt = twin(*opts)
    batch = [sample(), sample(64, 64)]
    loss = loss_and_backward(plain.train(), batch)
    assert checkpoint_calls == []
    loss_ckpt = loss_and_backward(ckpt.train(), batch)
    assert checkpoint_calls == [False] * DEPTH  # one non-reentrant checkpoint per block
    assert torch.allclose(loss_ckpt, loss, atol=1e-6)
    grads = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    for n, p in ckpt.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n
            assert torch.allclose(p.grad, grads[n], atol=1e-6), n
    assert ckpt.backbone.rein.learnable_tokens_b.grad[0].abs().sum() > 0  # the first block's


def test_only_the_first_n_blocks_are_checkpointed(checkpoint_calls):
    plain = mini_model()
    half = mini_model("MODEL.VIT.CHECKPOINT_BLOCKS", 2)
    half.load_state_dict(plain.state_dict())
    batch = [sample()]
    loss = loss_and_backward(plain.train(), batch)
    assert torch.allclose(loss_and_backward(half.train(), batch), loss, atol=1e-6)
    assert len(checkpoint_calls) == 2 < DEPTH


def test_checkpointing_is_skipped_without_a_backward_pass(checkpoint_calls):
    plain, ckpt = twin()
    image = {"image": torch.rand(3, 64, 96) * 255}
    with torch.no_grad():
        expected = plain.eval()([image])[0]["sem_seg"]
        assert torch.equal(ckpt.eval()([image])[0]["sem_seg"], expected)
        ckpt.backbone.train()(torch.randn(1, 3, 64, 64))  # training mode, but no gradients
    assert checkpoint_calls == []


def test_checkpointed_sam_blocks_match(checkpoint_calls):
    rein = dict(token_length=4, lora_dim=4, link_token_to_query=False)
    plain = tiny_backbone("sam", rein=rein).train()
    ckpt = tiny_backbone("sam", rein=rein, checkpoint_blocks=-1).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, ckpt):
        sum((f ** 2).mean() for f in model(x).values()).backward()
    assert len(checkpoint_calls) == DEPTH
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.requires_grad:
            assert torch.allclose(q.grad, p.grad, atol=1e-6), n
