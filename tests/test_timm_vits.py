"""Rein on any timm ViT by name (ReinTimmViT + MODEL.VIT.TIMM_NAME): Perception Encoder, RADIO
and SigLIP on small random-weight configurations. A checkpoint in timm's format converts through
the model's own timm filter; the backbone's features equal timm's own forward; the model trains
a step with gradients in Rein only. Other designs are refused with the reason."""
import pytest
import timm
import torch
import torch.nn.functional as F
from detectron2.modeling import build_backbone, build_model

from conftest import config_path
from rein_d2 import load_config
from rein_d2.checkpoint import convert_official_checkpoint, load_official_checkpoint
from test_meta_arch import MINI, sample

FAMILIES = {  # family -> a timm name of it
    "perception encoder": "vit_pe_core_small_patch16_384",
    "radio": "vit_base_patch16_radio_v3",
    "siglip": "vit_base_patch16_siglip_224",
}
SIZES = dict(embed_dim=64, depth=4, num_heads=2)


def cfg_for(name, *opts):
    return load_config(config_path("rein_dinov2.yaml"), MINI + [
        "MODEL.BACKBONE.NAME", "ReinTimmViT", "MODEL.VIT.TIMM_NAME", name, *opts])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_timm_checkpoint_converts_and_the_features_are_timms(family, tmp_path):
    name = FAMILIES[family]
    # the checkpoint at the model's own geometry (its image size), as timm saves it
    source = timm.create_model(name, pretrained=False, num_classes=0, **SIZES)
    torch.nn.init.normal_(source.patch_embed.proj.weight, std=0.05)
    torch.save(source.state_dict(), tmp_path / "timm.pth")

    backbone = build_backbone(cfg_for(name, "MODEL.REIN.ENABLED", False)).eval()
    converted, report = convert_official_checkpoint(load_official_checkpoint(str(tmp_path / "timm.pth")), backbone)
    backbone.vit.load_state_dict(converted, strict=True)
    for k, v in converted.items():
        if k not in report.resized:  # position tables are resized to the 64x64 grid
            assert torch.equal(v, source.state_dict()[k].float()), k

    reference = timm.create_model(name, pretrained=False, img_size=64, patch_size=16, num_classes=0,
                                  global_pool="", dynamic_img_size=True, **SIZES).eval()
    missing, unexpected = reference.load_state_dict(converted, strict=False)
    assert not unexpected
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # another grid
    with torch.no_grad():
        maps = reference.forward_intermediates(x, indices=backbone.out_indices, norm=False,
                                               output_fmt="NCHW", intermediates_only=True)
        out = backbone(x)
    for key, m, scale in zip(("res2", "res3", "res4", "res5"), maps, (4, 2, 1, 0.5)):
        if scale != 1:
            m = F.interpolate(m, scale_factor=scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[key], m, rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("family", FAMILIES)
def test_rein_on_a_timm_vit_trains_a_step(family):
    torch.manual_seed(0)
    model = build_model(cfg_for(FAMILIES[family])).train()
    losses = model([sample(), sample()])
    sum(losses.values()).backward()
    assert model.backbone.rein.learnable_tokens_a.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.vit.parameters())


@pytest.mark.parametrize("name,why", [
    ("naflexvit_base_patch16_siglip", "NaFlexVit"),
    ("resnet50", "ResNet"),
    ("samvit_base_patch16", "ReinSAM"),
    ("vit_nonexistent_model", "not a timm model"),
    ("", "needs MODEL.VIT.TIMM_NAME"),
])
def test_other_designs_are_refused_with_the_reason(name, why):
    with pytest.raises(ValueError, match=why):
        build_backbone(cfg_for(name))


def test_rein_on_dinov3_trains_a_step_and_leaves_its_register_tokens_alone():
    torch.manual_seed(0)
    model = build_model(load_config(config_path("gtav/rein_dinov3_s.yaml"), MINI)).train()
    backbone = model.backbone
    assert backbone.vit.__class__.__name__ == "Eva" and backbone.num_prefix_tokens == 5  # cls + 4 registers
    tokens = torch.randn(2, 5 + 16, 64)
    refined = backbone.rein(tokens, 0, num_prefix_tokens=5)
    assert torch.equal(refined[:, :5], tokens[:, :5]) and not torch.equal(refined[:, 5:], tokens[:, 5:])
    losses = model([sample(), sample()])
    sum(losses.values()).backward()
    assert backbone.rein.learnable_tokens_a.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.vit.parameters())
