"""Official VFM checkpoint files -> ReinViT weights, for EVA02, OpenAI CLIP, SAM, MAE and DINOv3.

For each family a miniature file is written with the official key names, nesting, dtypes and
shapes (random values; the official patch size and position grid, a miniature width and depth).
The conversion must give every tensor of ``backbone.vit`` (strict load) with the value the
official one maps to (renamed as is, or resized as the spec says), report the official keys the
backbone does not use, and give the backbone the per-block features of an independently built
timm model loaded with the same weights. Checkpoints of another family or size are refused.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import timm
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from rein_d2 import add_rein_config
from rein_d2.checkpoint import (CheckpointMismatchError, convert_official_checkpoint,
                                load_official_checkpoint)
from rein_d2.modeling.backbone.vit_rein import VFM_ARCHS, ReinViT
from rein_d2.tools import convert_pretrained

IMG, PATCH = 64, 16  # the backbone: a 4x4 patch grid
GRID = IMG // PATCH
MINI = dict(embed_dim=64, depth=4, num_heads=2)
SAM_LAYOUT = dict(global_attn_indexes=(1, 3), window_size=2)
NOOP_REIN = dict(token_length=4, lora_dim=4, query_dim=16, zero_mlp_delta_f=True)
ATOL = 1e-5

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")


# ---------------------------------------------------------------------------------------------
# Official files. Each builder adds the official tensors one by one, recording for each the
# timm name and value it must convert to (None: a key the backbone does not use).
# ---------------------------------------------------------------------------------------------
class OfficialState:
    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.state: Dict[str, torch.Tensor] = {}
        self.expected: Dict[str, torch.Tensor] = {}  # timm name -> value at official geometry
        self.unused: List[str] = []  # official keys the backbone does not use

    def add(self, key, shape, std=0.02, mean=0.0, timm_key=None, to_timm=None, dtype=None):
        v = torch.randn(shape, generator=self.gen) * std + mean
        return self.put(key, v if dtype is None else v.to(dtype), timm_key, to_timm)

    def put(self, key, v, timm_key=None, to_timm=None):
        self.state[key] = v
        if timm_key is None:
            self.unused.append(key)
        else:
            v = v.float()
            self.expected[timm_key] = to_timm(v) if to_timm else v
        return v

    def linear(self, key, n_out, n_in, timm_key=None, bias=True, dtype=None):
        self.add(f"{key}.weight", (n_out, n_in), n_in ** -0.5, dtype=dtype,
                 timm_key=timm_key and f"{timm_key}.weight")
        if bias:
            self.add(f"{key}.bias", (n_out,), 0.1, dtype=dtype,
                     timm_key=timm_key and f"{timm_key}.bias")

    def layernorm(self, key, dim, timm_key=None):
        self.add(f"{key}.weight", (dim,), 0.1, mean=1.0, timm_key=timm_key and f"{timm_key}.weight")
        self.add(f"{key}.bias", (dim,), 0.1, timm_key=timm_key and f"{timm_key}.bias")


def eva02_official(embed_dim, depth, num_heads, seed=0):
    """BAAI EVA-02 MIM pretrain (eva02_L_pt_m38m_p14.pt; EVA-02/asuka/modeling_pretrain.py with
    subln, naiveswiglu and rope): patch 14 at 224. As in the official model (and in timm's
    eva02_large_patch14_224), sub-LN gives separate bias-free q/k/v projections with q_bias and
    v_bias, and an ffn_ln inside the SwiGLU; the attention has no inner LayerNorm."""
    c, hid, head_dim, n = embed_dim, int(embed_dim * 4 * 2 / 3), embed_dim // num_heads, 16 * 16
    s = OfficialState(seed)
    s.add("cls_token", (1, 1, c), 1.0, timm_key="cls_token")
    s.add("mask_token", (1, 1, c), 1.0)
    s.add("pos_embed", (1, 1 + n, c), 0.5, timm_key="pos_embed")
    s.add("patch_embed.proj.weight", (c, 3, 14, 14), (3 * 14 * 14) ** -0.5,
          timm_key="patch_embed.proj.weight")
    s.add("patch_embed.proj.bias", (c,), 0.1, timm_key="patch_embed.proj.bias")
    # One VisionRotaryEmbeddingFast module, registered at the top and in every attention.
    cos = s.put("rope.freqs_cos", torch.rand(n, head_dim, generator=s.gen))
    sin = s.put("rope.freqs_sin", torch.rand(n, head_dim, generator=s.gen))
    for i in range(depth):
        b = f"blocks.{i}"
        s.layernorm(f"{b}.norm1", c, f"{b}.norm1")
        s.add(f"{b}.attn.q_bias", (c,), 0.1, timm_key=f"{b}.attn.q_proj.bias")
        s.add(f"{b}.attn.v_bias", (c,), 0.1, timm_key=f"{b}.attn.v_proj.bias")
        for p in ("q_proj", "k_proj", "v_proj"):
            s.linear(f"{b}.attn.{p}", c, c, f"{b}.attn.{p}", bias=False)
        s.put(f"{b}.attn.rope.freqs_cos", cos)
        s.put(f"{b}.attn.rope.freqs_sin", sin)
        s.linear(f"{b}.attn.proj", c, c, f"{b}.attn.proj")
        s.layernorm(f"{b}.norm2", c, f"{b}.norm2")
        s.linear(f"{b}.mlp.w1", hid, c, f"{b}.mlp.fc1_g")
        s.linear(f"{b}.mlp.w2", hid, c, f"{b}.mlp.fc1_x")
        s.layernorm(f"{b}.mlp.ffn_ln", hid, f"{b}.mlp.norm")
        s.linear(f"{b}.mlp.w3", c, hid, f"{b}.mlp.fc2")
    s.layernorm("norm", c)
    s.linear("lm_head", 48, c)  # MIM head onto the teacher's features
    return s


def clip_official(embed_dim, depth, num_heads, seed=1):
    """OpenAI CLIP ViT-L/14 (the JIT archive of clip.load): patch 14 at 224, linear, conv and
    attention weights in float16 as released, plus the text tower and three integer buffers."""
    c, n, half = embed_dim, 16 * 16, torch.float16
    s = OfficialState(seed)
    s.add("visual.class_embedding", (c,), 1.0, timm_key="cls_token",
          to_timm=lambda v: v.reshape(1, 1, c))
    s.add("visual.positional_embedding", (1 + n, c), 0.5, timm_key="pos_embed",
          to_timm=lambda v: v.unsqueeze(0))
    s.add("visual.proj", (c, 32), c ** -0.5, dtype=half)
    s.add("visual.conv1.weight", (c, 3, 14, 14), (3 * 14 * 14) ** -0.5, dtype=half,
          timm_key="patch_embed.proj.weight")
    s.layernorm("visual.ln_pre", c, "norm_pre")
    for i in range(depth):
        b, t = f"visual.transformer.resblocks.{i}", f"blocks.{i}"
        s.add(f"{b}.attn.in_proj_weight", (3 * c, c), c ** -0.5, dtype=half,
              timm_key=f"{t}.attn.qkv.weight")
        s.add(f"{b}.attn.in_proj_bias", (3 * c,), 0.1, dtype=half, timm_key=f"{t}.attn.qkv.bias")
        s.linear(f"{b}.attn.out_proj", c, c, f"{t}.attn.proj", dtype=half)
        s.layernorm(f"{b}.ln_1", c, f"{t}.norm1")
        s.linear(f"{b}.mlp.c_fc", 4 * c, c, f"{t}.mlp.fc1", dtype=half)
        s.linear(f"{b}.mlp.c_proj", c, 4 * c, f"{t}.mlp.fc2", dtype=half)
        s.layernorm(f"{b}.ln_2", c, f"{t}.norm2")
    s.layernorm("visual.ln_post", c)
    w, ctx, vocab = 32, 8, 50  # a one-block text tower
    s.add("positional_embedding", (ctx, w), 0.01)
    s.add("text_projection", (w, 32), w ** -0.5, dtype=half)
    s.add("logit_scale", (), 1.0)
    s.add("token_embedding.weight", (vocab, w), 0.02, dtype=half)
    s.add("transformer.resblocks.0.attn.in_proj_weight", (3 * w, w), w ** -0.5, dtype=half)
    s.add("transformer.resblocks.0.attn.in_proj_bias", (3 * w,), 0.1, dtype=half)
    s.linear("transformer.resblocks.0.attn.out_proj", w, w, dtype=half)
    s.layernorm("transformer.resblocks.0.ln_1", w)
    s.linear("transformer.resblocks.0.mlp.c_fc", 4 * w, w, dtype=half)
    s.linear("transformer.resblocks.0.mlp.c_proj", w, 4 * w, dtype=half)
    s.layernorm("transformer.resblocks.0.ln_2", w)
    s.layernorm("ln_final", w)
    for key, value in (("input_resolution", 224), ("context_length", ctx), ("vocab_size", vocab)):
        s.put(key, torch.tensor(value))
    return s


def sam_official(embed_dim, depth, num_heads, global_attn_indexes, window_size, seed=2):
    """segment-anything (sam_vit_b_01ec64.pth): flat, image encoder at 1024 with patch 16 (a
    64x64 [1, H, W, C] position table), relative position tables of 2 * 64 - 1 rows in the
    global blocks and 2 * window - 1 in the windowed ones, plus neck, prompt encoder and mask
    decoder."""
    c, head_dim, g, neck = embed_dim, embed_dim // num_heads, 64, 32
    s = OfficialState(seed)
    e = "image_encoder"
    s.add(f"{e}.pos_embed", (1, g, g, c), 0.5, timm_key="pos_embed")
    s.add(f"{e}.patch_embed.proj.weight", (c, 3, 16, 16), (3 * 16 * 16) ** -0.5,
          timm_key="patch_embed.proj.weight")
    s.add(f"{e}.patch_embed.proj.bias", (c,), 0.1, timm_key="patch_embed.proj.bias")
    for i in range(depth):
        b, t = f"{e}.blocks.{i}", f"blocks.{i}"
        s.layernorm(f"{b}.norm1", c, f"{t}.norm1")
        s.linear(f"{b}.attn.qkv", 3 * c, c, f"{t}.attn.qkv")
        s.linear(f"{b}.attn.proj", c, c, f"{t}.attn.proj")
        size = g if i in global_attn_indexes else window_size
        for hw in ("h", "w"):
            s.add(f"{b}.attn.rel_pos_{hw}", (2 * size - 1, head_dim), 0.5,
                  timm_key=f"{t}.attn.rel_pos_{hw}")
        s.layernorm(f"{b}.norm2", c, f"{t}.norm2")
        s.linear(f"{b}.mlp.lin1", 4 * c, c, f"{t}.mlp.fc1")
        s.linear(f"{b}.mlp.lin2", c, 4 * c, f"{t}.mlp.fc2")
    s.add(f"{e}.neck.0.weight", (neck, c, 1, 1), c ** -0.5)
    s.layernorm(f"{e}.neck.1", neck)
    s.add(f"{e}.neck.2.weight", (neck, neck, 3, 3), (9 * neck) ** -0.5)
    s.layernorm(f"{e}.neck.3", neck)
    s.add("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", (2, neck // 2), 1.0)
    for i in range(4):
        s.add(f"prompt_encoder.point_embeddings.{i}.weight", (1, neck), 1.0)
    s.add("prompt_encoder.not_a_point_embed.weight", (1, neck), 1.0)
    s.add("prompt_encoder.no_mask_embed.weight", (1, neck), 1.0)
    s.add("prompt_encoder.mask_downscaling.0.weight", (4, 1, 2, 2), 0.5)
    s.add("mask_decoder.iou_token.weight", (1, neck), 1.0)
    s.add("mask_decoder.mask_tokens.weight", (4, neck), 1.0)
    s.linear("mask_decoder.transformer.layers.0.self_attn.q_proj", neck, neck)
    s.linear("mask_decoder.iou_prediction_head.layers.2", 4, 64)
    return s


def mae_official(embed_dim, depth, num_heads, seed=3):
    """MAE pretrain encoder (mae_pretrain_vit_large.pth): in "model", patch 16 at 224."""
    c, n = embed_dim, 14 * 14
    s = OfficialState(seed)
    s.add("cls_token", (1, 1, c), 1.0, timm_key="cls_token")
    s.add("pos_embed", (1, 1 + n, c), 0.5, timm_key="pos_embed")
    s.add("patch_embed.proj.weight", (c, 3, 16, 16), (3 * 16 * 16) ** -0.5,
          timm_key="patch_embed.proj.weight")
    s.add("patch_embed.proj.bias", (c,), 0.1, timm_key="patch_embed.proj.bias")
    for i in range(depth):
        b = f"blocks.{i}"
        s.layernorm(f"{b}.norm1", c, f"{b}.norm1")
        s.linear(f"{b}.attn.qkv", 3 * c, c, f"{b}.attn.qkv")
        s.linear(f"{b}.attn.proj", c, c, f"{b}.attn.proj")
        s.layernorm(f"{b}.norm2", c, f"{b}.norm2")
        s.linear(f"{b}.mlp.fc1", 4 * c, c, f"{b}.mlp.fc1")
        s.linear(f"{b}.mlp.fc2", c, 4 * c, f"{b}.mlp.fc2")
    s.layernorm("norm", c)
    return s


def dinov3_official(embed_dim, depth, num_heads, seed=4):
    """Meta DINOv3 (dinov3_vit*16_pretrain_lvd1689m-*.pth, dinov3/models/vision_transformer.py):
    a flat dict, patch 16, no position table (rotary, whose periods buffer is stored), 4
    storage (register) tokens, a fused qkv whose bias holds zeros for k (bias_mask), LayerScale
    as ls1/ls2.gamma, and the pretraining mask token."""
    c = embed_dim
    s = OfficialState(seed)
    s.add("cls_token", (1, 1, c), 1.0, timm_key="cls_token")
    s.add("storage_tokens", (1, 4, c), 1.0, timm_key="reg_token")
    s.add("mask_token", (1, c), 1.0)
    s.add("patch_embed.proj.weight", (c, 3, 16, 16), (3 * 16 * 16) ** -0.5,
          timm_key="patch_embed.proj.weight")
    s.add("patch_embed.proj.bias", (c,), 0.1, timm_key="patch_embed.proj.bias")
    # Meta's periods base ** (2k / (2n)), stored in bfloat16 as the released files hold them;
    # rein_d2 uses these stored values, as Meta's model does (timm recomputes them in float32).
    n = c // num_heads // 4
    s.put("rope_embed.periods", (100.0 ** (torch.arange(n) / n)).to(torch.bfloat16),
          timm_key="rope.periods")
    for i in range(depth):
        b = f"blocks.{i}"
        s.layernorm(f"{b}.norm1", c, f"{b}.norm1")
        s.linear(f"{b}.attn.qkv", 3 * c, c, f"{b}.attn.qkv", bias=False)
        q, v = (torch.randn(c, generator=s.gen) * 0.1 for _ in range(2))
        bias = s.put(f"{b}.attn.qkv.bias", torch.cat([q, torch.zeros(c), v]))
        s.expected[f"{b}.attn.q_bias"], s.expected[f"{b}.attn.v_bias"] = bias[:c], bias[2 * c:]
        s.unused.remove(f"{b}.attn.qkv.bias")  # split into q_bias and v_bias
        s.put(f"{b}.attn.qkv.bias_mask", torch.cat([torch.ones(c), torch.zeros(c), torch.ones(c)]))
        s.linear(f"{b}.attn.proj", c, c, f"{b}.attn.proj")
        s.add(f"{b}.ls1.gamma", (c,), 0.1, mean=1.0, timm_key=f"{b}.gamma_1")
        s.layernorm(f"{b}.norm2", c, f"{b}.norm2")
        s.linear(f"{b}.mlp.fc1", 4 * c, c, f"{b}.mlp.fc1")
        s.linear(f"{b}.mlp.fc2", c, 4 * c, f"{b}.mlp.fc2")
        s.add(f"{b}.ls2.gamma", (c,), 0.1, mean=1.0, timm_key=f"{b}.gamma_2")
    s.layernorm("norm", c)
    return s


def save_wrapped(state, path):
    torch.save({"model": state}, path)


def save_flat(state, path):
    torch.save(state, path)


def save_torchscript(state, path):
    """A TorchScript archive whose module has exactly these state dict keys."""
    root = nn.Module()
    for key, v in state.items():
        *names, leaf = key.split(".")
        module = root
        for name in names:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        if v.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(v, requires_grad=False))
        else:
            module.register_buffer(leaf, v)
    scripted = torch.jit.script(root)
    assert set(scripted.state_dict()) == set(state)
    torch.jit.save(scripted, path)


@dataclass
class Format:
    arch: Tuple[str, str]
    make: Callable[..., OfficialState]
    save: Callable
    layout: dict = field(default_factory=dict)  # timm arguments beyond the sizes
    out_indices: Optional[List[int]] = None
    resized: Tuple[str, ...] = ("patch_embed.proj.weight", "pos_embed")  # patch 14 -> 16


FORMATS = {
    "eva02": Format(("eva02", "large"), eva02_official, save_wrapped),
    "clip": Format(("clip", "large"), clip_official, save_torchscript),
    # Rein refines only the global blocks (1, 3); the outputs are the four blocks.
    "sam": Format(("sam", "base"), sam_official, save_flat, SAM_LAYOUT, [0, 1, 2, 3],
                  ("pos_embed", "blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w",
                   "blocks.3.attn.rel_pos_h", "blocks.3.attn.rel_pos_w")),
    "mae": Format(("mae", "large"), mae_official, save_wrapped, resized=("pos_embed",)),
    "dinov3": Format(("dinov3", "small"), dinov3_official, save_flat, resized=()),  # native 16
}
FAMILY_NAMES = {"eva02": "EVA02", "clip": "OpenAI CLIP", "sam": "SAM", "mae": "MAE", "dinov3": "DINOv3"}


def write_official(fmt: Format, path, **sizes) -> OfficialState:
    s = fmt.make(**dict(MINI, **fmt.layout, **sizes))
    fmt.save(s.state, str(path))
    return s


def make_backbone(fmt: Format, rein=None) -> ReinViT:
    return ReinViT(arch=VFM_ARCHS[fmt.arch], img_size=IMG, patch_size=PATCH, rein=rein,
                   out_indices=fmt.out_indices, timm_overrides=dict(MINI, **fmt.layout)).eval()


def spec_resize(key: str, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The spec's resizes, written out: bicubic (align_corners=False) patch kernel and patch
    part of the position table (the cls entry kept), linear relative position tables."""
    if key == "patch_embed.proj.weight":
        return F.interpolate(v, size=tuple(shape[-2:]), mode="bicubic", align_corners=False)
    if key == "pos_embed" and v.dim() == 4:  # SAM [1, H, W, C]
        return F.interpolate(v.permute(0, 3, 1, 2), size=tuple(shape[1:3]), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1)
    if key == "pos_embed":  # [1, 1 + g * g, C]
        g, c = int((v.shape[1] - 1) ** 0.5), v.shape[2]
        grid = v[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(GRID, GRID), mode="bicubic", align_corners=False)
        return torch.cat([v[:, :1], grid.permute(0, 2, 3, 1).reshape(1, GRID * GRID, c)], 1)
    if key.endswith(("rel_pos_h", "rel_pos_w")):  # [2 S - 1, head_dim]
        return F.interpolate(v.t()[None], size=shape[0], mode="linear")[0].t()
    raise AssertionError(f"no resize expected for {key}")


def timm_reference(fmt: Format, weights: Dict[str, torch.Tensor]) -> nn.Module:
    """The timm model of the format, built on its own, loaded with ``weights``."""
    model = timm.create_model(VFM_ARCHS[fmt.arch].timm_name, pretrained=False, img_size=IMG,
                              patch_size=PATCH, num_classes=0, global_pool="",
                              **MINI, **fmt.layout).eval()
    weights = dict(weights)
    if "rope.periods" in weights:  # DINOv3: timm's periods buffer is not in its state dict
        model.rope.periods.copy_(weights.pop("rope.periods"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected
    assert all(k.split(".")[0] in ("norm", "fc_norm", "head", "neck") for k in missing), missing
    return model


def assert_features_match_timm(backbone: ReinViT, fmt: Format, weights, x: torch.Tensor):
    """Per-block features of the backbone == timm's intermediates; res2..res5 == timm's maps
    resized by x4, x2, x1, x0.5 (bilinear, align_corners=False)."""
    ref = timm_reference(fmt, weights)
    with torch.no_grad():
        maps = ref.forward_intermediates(x, indices=backbone.out_indices, norm=False,
                                         output_fmt="NCHW", intermediates_only=True)
        out = backbone(x)
    assert len(maps) == 4
    for name, m, scale in zip(("res2", "res3", "res4", "res5"), maps, (4, 2, 1, 0.5)):
        assert m.shape == (x.shape[0], backbone.embed_dim, GRID, GRID)
        if scale != 1:
            m = F.interpolate(m, scale_factor=scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[name], m, rtol=0, atol=ATOL, msg=name)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """name -> (file path, OfficialState) for each format at the miniature's sizes."""
    tmp = tmp_path_factory.mktemp("official")
    return {name: (str(tmp / f"{name}.pth"), write_official(fmt, tmp / f"{name}.pth"))
            for name, fmt in FORMATS.items()}


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMATS)
def test_conversion_gives_every_backbone_tensor_from_its_official_tensor(name, official):
    fmt, (path, s) = FORMATS[name], official[name]
    backbone = make_backbone(fmt)
    converted, report = convert_official_checkpoint(load_official_checkpoint(path), backbone)

    target = backbone.vit.state_dict()
    assert set(converted) == set(target) == set(s.expected)
    backbone.vit.load_state_dict(converted, strict=True)
    assert sorted(report.resized) == sorted(fmt.resized)
    for k, v in converted.items():
        want = s.expected[k]
        if k in fmt.resized:
            want = spec_resize(k, want, target[k].shape)
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, want, rtol=0, atol=1e-6, msg=k)
    # The report names the official keys left out (heads, text tower, prompt encoder, ...).
    assert sorted(report.dropped) == sorted(s.unused)
    assert report.missing == []


@pytest.mark.parametrize("rein", [None, NOOP_REIN], ids=["plain", "rein"])
@pytest.mark.parametrize("name", FORMATS)
def test_converted_backbone_features_match_timm(name, rein, official):
    fmt, (path, _) = FORMATS[name], official[name]
    backbone = make_backbone(fmt, rein)
    if name == "sam":
        assert backbone.rein_blocks == [1, 3]
    converted, _ = convert_official_checkpoint(load_official_checkpoint(path), backbone)
    backbone.vit.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(4))
    assert_features_match_timm(backbone, fmt, converted, x)


def test_report_names_dropped_keys(official):
    _, report = convert_official_checkpoint(
        load_official_checkpoint(official["clip"][0]), make_backbone(FORMATS["clip"]))
    assert {"token_embedding.weight", "positional_embedding", "text_projection", "logit_scale",
            "ln_final.weight", "visual.proj", "visual.ln_post.weight", "vocab_size"} <= set(
        report.dropped)
    summary = report.summary()
    assert f"dropped {len(report.dropped)} keys: {report.dropped[0]}, " in summary
    assert "(2 resized: " in summary

    _, report = convert_official_checkpoint(
        load_official_checkpoint(official["eva02"][0]), make_backbone(FORMATS["eva02"]))
    assert {"mask_token", "lm_head.weight", "lm_head.bias", "norm.weight", "rope.freqs_cos",
            "blocks.0.attn.rope.freqs_sin"} <= set(report.dropped)

    _, report = convert_official_checkpoint(
        load_official_checkpoint(official["sam"][0]), make_backbone(FORMATS["sam"]))
    assert {"image_encoder.neck.0.weight", "prompt_encoder.no_mask_embed.weight",
            "mask_decoder.iou_token.weight"} <= set(report.dropped)
    assert not any(k.startswith("image_encoder.blocks.") for k in report.dropped)


def test_dinov3_keeps_its_files_rope_periods(official):
    """The stored (bfloat16) periods are what the backbone uses; a file without them gets
    timm's float32 formula, reported as written by the model."""
    state = load_official_checkpoint(official["dinov3"][0])
    backbone = make_backbone(FORMATS["dinov3"])
    formula = backbone.vit.rope.periods.clone()
    converted, report = convert_official_checkpoint(dict(state), backbone)
    assert torch.equal(converted["rope.periods"], state["rope_embed.periods"].float())
    assert not torch.equal(converted["rope.periods"], formula)  # bfloat16-rounded
    assert "rope_embed.periods" not in report.dropped and report.initialised == []
    del state["rope_embed.periods"]
    converted, report = convert_official_checkpoint(state, backbone)
    assert torch.equal(converted["rope.periods"], formula) and report.initialised == ["rope.periods"]
    assert "written with the model's initial values (1 keys): rope.periods" in report.summary()


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("checkpoint, backbone", [
    ("mae", "eva02"), ("eva02", "mae"), ("clip", "sam"), ("sam", "clip"), ("mae", "clip"),
    ("dinov3", "eva02"), ("eva02", "dinov3")])
def test_checkpoint_of_another_family_is_refused(checkpoint, backbone, official):
    state = load_official_checkpoint(official[checkpoint][0])
    with pytest.raises(CheckpointMismatchError) as e:
        convert_official_checkpoint(state, make_backbone(FORMATS[backbone]))
    msg = str(e.value)
    assert f"this is a {FAMILY_NAMES[checkpoint]} checkpoint" in msg
    assert f"backbone is {FAMILY_NAMES[backbone]}" in msg


@pytest.mark.parametrize("name, sizes, expect", [
    ("mae", dict(depth=6), ("6 blocks", "4 blocks")),
    ("eva02", dict(depth=6), ("6 blocks", "4 blocks")),
    ("sam", dict(depth=6), ("6 blocks", "4 blocks")),
    ("mae", dict(depth=2), ("2 blocks", "4 blocks")),
    ("clip", dict(depth=2), ("2 blocks", "4 blocks")),
    ("mae", dict(embed_dim=32), ("width 32", "width 64")),
    ("eva02", dict(embed_dim=32), ("width 32", "width 64")),
    ("sam", dict(embed_dim=32), ("width 32", "width 64")),
])
def test_checkpoint_of_another_size_is_refused(name, sizes, expect, tmp_path):
    fmt = FORMATS[name]
    write_official(fmt, tmp_path / "other_size.pth", **sizes)
    state = load_official_checkpoint(str(tmp_path / "other_size.pth"))
    with pytest.raises(CheckpointMismatchError) as e:
        convert_official_checkpoint(state, make_backbone(fmt))
    msg = str(e.value)
    assert all(s in msg for s in expect), msg
    assert "MODEL.VIT.SIZE" in msg


def test_checkpoint_with_other_block_weights_is_refused(official):
    """An EVA02 variant with an inner attention LayerNorm (as EVA02-CLIP has) is another
    block design: its extra weights must not be dropped silently."""
    state = load_official_checkpoint(official["eva02"][0])
    for i in range(MINI["depth"]):
        state[f"blocks.{i}.attn.inner_attn_ln.weight"] = torch.ones(MINI["embed_dim"])
        state[f"blocks.{i}.attn.inner_attn_ln.bias"] = torch.zeros(MINI["embed_dim"])
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.attn\.norm\.weight"):
        convert_official_checkpoint(state, make_backbone(FORMATS["eva02"]))


# ---------------------------------------------------------------------------------------------
# tools/convert_pretrained.py
# ---------------------------------------------------------------------------------------------
MAE_YAML = """\
MODEL:
  BACKBONE:
    NAME: ReinMAE
  VIT:
    EMBED_DIM: 64
    DEPTH: 4
    NUM_HEADS: 2
    IMG_SIZE: 64
    PATCH_SIZE: 16
  REIN:
    ENABLED: False
VERSION: 2
"""


def test_convert_pretrained_cli_end_to_end(official, tmp_path, capsys):
    yaml = tmp_path / "mae_mini.yaml"
    yaml.write_text(MAE_YAML)
    output = tmp_path / "weights" / "mae_mini.pth"
    rc = convert_pretrained.main(["--config-file", str(yaml), "--input", official["mae"][0],
                           "--output", str(output)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "dropped 2 keys: norm.weight, norm.bias" in stdout
    assert "(1 resized: pos_embed)" in stdout  # MAE's kernel is 16x16 already
    assert os.listdir(output.parent) == ["mae_mini.pth"]  # no temporary file left behind

    saved = torch.load(str(output), map_location="cpu", weights_only=True)
    assert all(k.startswith("backbone.vit.") for k in saved["model"])
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(str(yaml))
    backbone = build_backbone(cfg).eval()
    assert backbone.rein is None and backbone.vit.embed_dim == 64
    weights = {k[len("backbone.vit."):]: v for k, v in saved["model"].items()}
    backbone.vit.load_state_dict(weights, strict=True)

    direct, _ = convert_official_checkpoint(load_official_checkpoint(official["mae"][0]),
                                            make_backbone(FORMATS["mae"]))
    assert set(direct) == set(weights)
    assert all(torch.equal(direct[k], weights[k]) for k in direct)
    x = torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))
    assert_features_match_timm(backbone, FORMATS["mae"], weights, x)


def test_convert_pretrained_cli_refuses_another_family(official, tmp_path, capsys):
    yaml = tmp_path / "mae_mini.yaml"
    yaml.write_text(MAE_YAML)
    output = tmp_path / "out.pth"
    rc = convert_pretrained.main(["--config-file", str(yaml), "--input", official["eva02"][0],
                                  "--output", str(output)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "EVA02 checkpoint" in err and "backbone is MAE" in err
    assert not output.exists()
    rc = convert_pretrained.main(["--config-file", str(yaml), "--input", str(tmp_path / "absent.pth"),
                                  "--output", str(output)])
    assert rc == 2 and "no such checkpoint file" in capsys.readouterr().err
    assert not output.exists()
