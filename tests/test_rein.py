"""The Rein module and the Rein ViT backbones (docs/method.md sections 1-3)."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model

from rein_d2 import add_rein_config
from rein_d2.modeling import Rein, ReinViT
from rein_d2.modeling.backbone import VFM_ARCHS, default_out_indices

from conftest import config_path

TINY = dict(embed_dim=64, depth=4, num_heads=2)


def load_cfg(name="rein_dinov2.yaml", opts=()):
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path(name))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def tiny_backbone(**rein):
    return ReinViT(arch=VFM_ARCHS[("dinov2", "small")], img_size=64, timm_overrides=TINY,
                   rein=dict(dict(token_length=10, lora_dim=4, query_dim=32), **rein))


# -- parameter counts (spec section 3 table) ------------------------------------------------
@pytest.mark.parametrize("opts,expected", [
    ((), 2_990_081),  # DINOv2-L
    (("MODEL.VIT.SIZE", "base"), 1_741_569),
    (("MODEL.VIT.SIZE", "small"), 684_033),
    (("MODEL.REIN.LINK_TOKEN_TO_QUERY", False), 2_530_817),
    (("MODEL.BACKBONE.NAME", "ReinEVA02"), 2_990_081),
    (("MODEL.BACKBONE.NAME", "ReinCLIP"), 2_990_081),
    (("MODEL.BACKBONE.NAME", "ReinSAM", "MODEL.VIT.SIZE", "huge"), 3_892_481),
])
def test_trainable_parameters_match_spec(opts, expected):
    with torch.device("meta"):  # shapes only: no memory or time for a ViT-L
        backbone = build_backbone(load_cfg(opts=opts))
    assert trainable(backbone) == expected
    assert trainable(backbone) == trainable(backbone.rein)


def test_config_builds_full_model_without_weights():
    model = build_model(load_cfg())
    assert trainable(model.backbone) == 2_990_081
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())


def test_out_indices_defaults():
    assert default_out_indices(24) == [7, 11, 15, 23]
    assert default_out_indices(12) == [3, 5, 7, 11]
    assert default_out_indices(40) == [9, 19, 29, 39]
    assert default_out_indices(4) == [0, 1, 2, 3]
    with torch.device("meta"):
        sam = build_backbone(load_cfg(opts=("MODEL.BACKBONE.NAME", "ReinSAM", "MODEL.VIT.SIZE", "huge")))
    assert sam.rein_blocks == [7, 15, 23, 31] and sam.out_indices == [7, 15, 23, 31]


# -- the Rein equations --------------------------------------------------------------------
def test_rein_forward_follows_the_equations():
    rein = Rein(num_layers=3, embed_dim=8, token_length=5, lora_dim=2, query_dim=4)
    x = torch.randn(2, 1 + 6, 8)  # cls + 6 patches
    layer = 1
    T = rein.learnable_tokens_a[layer] @ rein.learnable_tokens_b[layer]
    f = x[:, 1:]
    S = torch.softmax(torch.einsum("bnc,mc->bnm", f, T) / math.sqrt(8), dim=-1)
    delta_bar = torch.einsum("bnm,mc->bnc", S[..., 1:], rein.mlp_token2feat(T[1:]))
    expected = f + rein.scale * rein.mlp_delta_f(delta_bar + f)
    out = rein(x, layer, num_prefix_tokens=1)
    torch.testing.assert_close(out[:, 1:], expected, rtol=0, atol=1e-6)
    assert torch.equal(out[:, :1], x[:, :1])  # cls token passes through unchanged


def test_linked_queries_interleave_max_mean_last():
    rein = Rein(num_layers=3, embed_dim=8, token_length=5, lora_dim=2, query_dim=4)
    X = rein.transform(rein.learnable_tokens_a @ rein.learnable_tokens_b)  # [L, m, D]
    m, D = X.shape[1:]
    manual = torch.empty(m, 3 * D)
    for c in range(D):
        manual[:, 3 * c] = X[:, :, c].max(dim=0).values
        manual[:, 3 * c + 1] = X[:, :, c].mean(dim=0)
        manual[:, 3 * c + 2] = X[-1, :, c]
    torch.testing.assert_close(rein.linked_queries(), rein.merge(manual), rtol=0, atol=1e-6)


def test_rein_initialisation_and_options():
    C, r, p = 1024, 16, 16
    rein = Rein(num_layers=2, embed_dim=C, lora_dim=r)
    bound = math.sqrt(6 / (3 * p * p + math.sqrt(C * r)))
    assert rein.learnable_tokens_a.abs().max() <= bound
    assert rein.learnable_tokens_a.abs().max() > 0.9 * bound
    assert rein.scale.item() == pytest.approx(1e-3)
    full = Rein(num_layers=2, embed_dim=C, lora_dim=0)
    assert full.learnable_tokens.shape == (2, 100, C)
    assert full.learnable_tokens.abs().max() <= math.sqrt(6 / (3 * p * p + C))
    zero = Rein(num_layers=2, embed_dim=8, zero_mlp_delta_f=True)
    assert "scale" not in dict(zero.named_parameters()) and zero.scale.item() == 1.0
    assert not zero.mlp_delta_f.weight.any() and not zero.mlp_delta_f.bias.any()
    assert Rein(num_layers=2, embed_dim=8, link_token_to_query=False).linked_queries() is None
    # Without softmax the raw similarities weight the tokens.
    raw = Rein(num_layers=1, embed_dim=8, token_length=4, lora_dim=0, use_softmax=False)
    f = torch.randn(1, 3, 8)
    T = raw.learnable_tokens[0]
    expected = raw.mlp_delta_f((f @ T.t())[..., 1:] @ raw.mlp_token2feat(T[1:]) + f)
    torch.testing.assert_close(raw.delta_f(f, T), expected)


# -- the backbone --------------------------------------------------------------------------
def test_zero_mlp_delta_f_gives_the_plain_vfm_features():
    refined = tiny_backbone(zero_mlp_delta_f=True).eval()
    plain = ReinViT(arch=VFM_ARCHS[("dinov2", "small")], img_size=64, timm_overrides=TINY, rein=None)
    plain.vit.load_state_dict(refined.vit.state_dict())
    plain.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = refined(x), plain(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_optimizer_step_changes_only_rein_and_vfm_stays_in_eval():
    backbone = tiny_backbone()
    backbone.train()
    assert not backbone.vit.training and all(not m.training for m in backbone.vit.modules())
    assert backbone.rein.training
    frozen = {k: v.clone() for k, v in backbone.vit.state_dict().items()}
    rein_before = {k: v.clone() for k, v in backbone.rein.state_dict().items()}
    opt = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-2)
    out = backbone(torch.randn(2, 3, 64, 64))
    loss = sum(v.square().mean() for v in out.values()) + backbone.linked_queries().square().mean()
    loss.backward()
    opt.step()
    for k, v in backbone.vit.state_dict().items():
        assert torch.equal(v, frozen[k]), f"frozen weight {k} changed"
    for k, v in backbone.rein.state_dict().items():
        assert not torch.equal(v, rein_before[k]), f"Rein parameter {k} did not change"
    assert all(p.grad is None for p in backbone.vit.parameters())


def test_full_fine_tuning_option_trains_the_vfm():
    backbone = ReinViT(arch=VFM_ARCHS[("dinov2", "small")], img_size=64, timm_overrides=TINY,
                       rein=None, freeze=False)
    backbone.train()
    assert backbone.vit.training and trainable(backbone) == sum(p.numel() for p in backbone.parameters())


@pytest.mark.parametrize("hw", [(512, 512), (512, 1024)])
def test_shapes_and_strides(hw):
    cfg = load_cfg(opts=("MODEL.VIT.SIZE", "small"))
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (384, 4), "res3": (384, 8), "res4": (384, 16), "res5": (384, 32)}
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, *hw))
    for k, s in shapes.items():
        assert out[k].shape == (1, s.channels, hw[0] // s.stride, hw[1] // s.stride)
    assert backbone.linked_queries().shape == (100, 256)


def test_position_table_interpolated_for_other_grids():
    backbone = tiny_backbone().eval()  # stored grid 4x4 (64 / 16)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 96, 160))
    assert out["res4"].shape == (1, 64, 6, 10)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        backbone(torch.randn(1, 3, 70, 64))


def test_registers_pass_through_rein():
    backbone = ReinViT(arch=VFM_ARCHS[("dinov2", "small_reg4")], img_size=64, timm_overrides=TINY,
                       rein=dict(token_length=10, lora_dim=4, query_dim=32))
    assert backbone.num_prefix_tokens == 5
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 64, 2, 2)


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="set MODEL.VIT.SIZE to one of"):
        build_backbone(load_cfg(opts=("MODEL.VIT.SIZE", "tiny")))


def test_run_time_position_resize_is_dinov2s():
    """DINOv2's interpolate_pos_encoding (interpolate_offset 0.1, no antialias): bicubic with
    scale factors (rows + 0.1) / M and (cols + 0.1) / M of the stored M x M grid. The offset
    changes the values, so a plain resize to the target size would not match the reference."""
    import torch.nn.functional as F
    from rein_d2.modeling.backbone.vit_rein import resize_pos_grid

    grid = torch.randn(1, 8, 4, 4)
    ref = F.interpolate(grid, scale_factor=(6.1 / 4, 10.1 / 4), mode="bicubic", align_corners=False)
    assert ref.shape[-2:] == (6, 10)
    assert torch.equal(resize_pos_grid(grid, (6, 10)), ref)
    plain = F.interpolate(grid, size=(6, 10), mode="bicubic", align_corners=False)
    assert (plain - ref).abs().max() > 1e-2
