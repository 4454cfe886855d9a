"""Rein on CNNs (ReinResNet, ReinConvNeXt), in the release's layout: one Rein per stage over
its blocks, stage outputs as res2..res5, the head's queries the sum of the stages' queries.
Checkpoints in the official layouts (mmseg / mmcls ResNetV1c, timm ResNet, the official
ConvNeXt-22k, mmpretrain ConvNeXt, timm ConvNeXt) written by the tests convert tensor for
tensor, and the features equal timm's own forward (ConvNeXt: through the release's per-stage
LayerNorm2d); release checkpoints keep backbone.reins.<stage>. Parity with the reference
itself: test_reference_parity_cnn.py."""
import pytest
import timm
import torch
import torch.nn.functional as F
from detectron2.modeling import build_backbone, build_model

from conftest import config_path
from rein_d2 import load_config
from rein_d2.checkpoint import (CheckpointMismatchError, convert_official_checkpoint,
                                load_official_checkpoint)
from rein_d2.checkpoint.release import convert_release_checkpoint
from rein_d2.tools import convert_pretrained
from test_meta_arch import MINI, sample

DEPTHS = (1, 2, 1, 1)  # small: the widths stay the real ones
CONFIGS = {"resnet50": "gtav/rein_resnet50.yaml", "convnext_l": "gtav/rein_convnext_l.yaml"}
TIMM = {"resnet50": "resnet50c", "convnext_l": "convnext_large"}


def cfg_for(name, *opts):
    return load_config(config_path(CONFIGS[name]), MINI + ["MODEL.CNN.DEPTHS", list(DEPTHS), *opts])


def timm_source(name, seed=0):
    """A randomly initialised timm network of the test's depths, batch-norm statistics included."""
    torch.manual_seed(seed)
    key = "layers" if name == "resnet50" else "depths"
    net = timm.create_model(TIMM[name], pretrained=False, num_classes=7, **{key: DEPTHS})
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def mmseg_resnet(timm_state):
    """mmcv / mmseg ResNetV1c names (the release's starting weights): stem.{0,3,6} convs and
    stem.{1,4,7} batch norms, the rest as timm; plus an fc head."""
    back = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4.",
            "conv1.6.": "stem.6.", "bn1.": "stem.7."}
    return {next((to + k[len(src):] for src, to in back.items() if k.startswith(src)), k): v
            for k, v in timm_state.items()}


def mmcls_resnet(timm_state):
    """mmcls ResNetV1c: ConvModule stems (stem.i.conv / stem.i.bn) under backbone., a head."""
    back = {"conv1.0.": "stem.0.conv.", "conv1.1.": "stem.0.bn.", "conv1.3.": "stem.1.conv.",
            "conv1.4.": "stem.1.bn.", "conv1.6.": "stem.2.conv.", "bn1.": "stem.2.bn."}
    out = {}
    for k, v in timm_state.items():
        if k.startswith("fc."):
            out["head." + k] = v
            continue
        out["backbone." + next((to + k[len(src):] for src, to in back.items() if k.startswith(src)), k)] = v
    return out


def official_convnext(timm_state):
    """The official ConvNeXt release (facebookresearch/ConvNeXt, convnext_large_22k_224.pth)."""
    out = {}
    for k, v in timm_state.items():
        k2 = k.replace("stem.0.", "downsample_layers.0.0.").replace("stem.1.", "downsample_layers.0.1.")
        for i in range(1, 4):
            k2 = k2.replace(f"stages.{i}.downsample.0.", f"downsample_layers.{i}.0.")
            k2 = k2.replace(f"stages.{i}.downsample.1.", f"downsample_layers.{i}.1.")
        k2 = k2.replace(".blocks.", ".").replace(".conv_dw.", ".dwconv.").replace(".mlp.fc1.", ".pwconv1.")
        k2 = k2.replace(".mlp.fc2.", ".pwconv2.").replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k2] = v
    return out


def mmpretrain_convnext(timm_state):
    """mmpretrain / mmcls ConvNeXt (what mmseg's ConvNeXt configs load): the official names with
    depthwise_conv / pointwise_conv{1,2}, the final norm as norm3, under backbone., head.fc."""
    out = {}
    for k, v in official_convnext(timm_state).items():
        if k.startswith("head."):
            out["head.fc." + k[len("head."):]] = v
            continue
        k = k.replace(".dwconv.", ".depthwise_conv.").replace(".pwconv", ".pointwise_conv")
        out["backbone." + ("norm3." + k[len("norm."):] if k.startswith("norm.") else k)] = v
    return out


def release_norms(source, maps):
    """The release's ConvNeXt outputs: LayerNorm2d over channels (eps 1e-6) of each stage,
    stages 0-2 without affine (weight 1, bias 0), stage 3 with the network's final norm."""
    out = []
    for i, m in enumerate(maps):
        w, b = (source.head.norm.weight, source.head.norm.bias) if i == 3 else (None, None)
        out.append(F.layer_norm(m.permute(0, 2, 3, 1), m.shape[1:2], w, b, 1e-6).permute(0, 3, 1, 2))
    return out


FORMATS = {  # format -> (network, writer)
    "mmseg ResNetV1c": ("resnet50", lambda s: {"state_dict": mmseg_resnet(s)}),
    "mmcls ResNetV1c": ("resnet50", lambda s: {"meta": {}, "state_dict": mmcls_resnet(s)}),
    "timm ResNet": ("resnet50", lambda s: s),
    "official ConvNeXt-22k": ("convnext_l", lambda s: {"model": official_convnext(s)}),
    "mmpretrain ConvNeXt": ("convnext_l", lambda s: {"meta": {}, "state_dict": mmpretrain_convnext(s)}),
    "timm ConvNeXt": ("convnext_l", lambda s: s),
}


def test_an_mmseg_segmentor_file_gives_its_backbone_and_drops_its_heads(tmp_path):
    """An mmseg-trained segmentor (backbone.* beside decode_head.* / auxiliary_head.*) converts:
    its heads are dropped and reported, not taken for weights of a deeper network."""
    source = timm_source("resnet50").state_dict()
    state = mmseg_resnet(source)
    heads = {"decode_head.conv_seg.weight": torch.zeros(19, 512, 1, 1),
             "auxiliary_head.conv_seg.weight": torch.zeros(19, 256, 1, 1)}
    torch.save({"state_dict": {**state, **heads}}, tmp_path / "segmentor.pth")
    backbone = build_backbone(cfg_for("resnet50", "MODEL.REIN.ENABLED", False))
    converted, report = convert_official_checkpoint(load_official_checkpoint(str(tmp_path / "segmentor.pth")), backbone)
    backbone.vit.load_state_dict(converted, strict=True)
    assert set(heads) <= set(report.dropped)


# (the mmpretrain layout: tensor for tensor in test_convert_pretrained_then_train_from_the_file)
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "mmpretrain ConvNeXt"])
def test_official_checkpoints_convert_tensor_for_tensor_and_features_are_timms(fmt, tmp_path):
    name, write = FORMATS[fmt]
    source = timm_source(name)
    torch.save(write(source.state_dict()), tmp_path / "w.pth")
    backbone = build_backbone(cfg_for(name, "MODEL.REIN.ENABLED", False)).eval()
    converted, report = convert_official_checkpoint(load_official_checkpoint(str(tmp_path / "w.pth")), backbone)
    backbone.vit.load_state_dict(converted, strict=True)
    for k, v in backbone.vit.state_dict().items():
        if k.startswith("stage_norms."):  # in no ImageNet file: LayerNorm2d's initial values
            assert torch.equal(v, torch.full_like(v, float(k.endswith("weight")))), k
            assert k in report.initialised
            continue
        assert torch.equal(v, source.state_dict()[k]), k
    file_keys = list(load_official_checkpoint(str(tmp_path / "w.pth")))
    # the classifier, named as the file names it
    assert report.dropped and set(report.dropped) == {
        k for k in file_keys if ("fc." in k or k.startswith("head.")) and "head.norm." not in k}

    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = source.forward_intermediates(x, indices=4, intermediates_only=True)
        if name == "convnext_l":
            ref = release_norms(source, ref)
        out = backbone(x)
    for key, m in zip(("res2", "res3", "res4", "res5"), ref):
        torch.testing.assert_close(out[key], m, rtol=0, atol=1e-5, msg=key)
    strides = {k: v.stride for k, v in backbone.output_shape().items()}
    assert strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert [out[k].shape[-1] for k in ("res2", "res3", "res4", "res5")] == [24, 12, 6, 3]


def test_checkpoints_of_another_design_or_depth_are_refused(tmp_path):
    backbone = build_backbone(cfg_for("resnet50"))
    plain = timm.create_model("resnet50", pretrained=False, layers=DEPTHS).state_dict()  # 7x7 stem
    with pytest.raises(CheckpointMismatchError, match="not a ResNet V1c checkpoint"):
        convert_official_checkpoint(plain, backbone)
    deeper = timm_source("resnet50").state_dict()
    deeper.update({k.replace("layer3.0.", "layer3.1."): v for k, v in deeper.items() if k.startswith("layer3.0.")})
    with pytest.raises(CheckpointMismatchError, match=r"has no place for .*layer3\.1\..*MODEL.CNN.SIZE"):
        convert_official_checkpoint(deeper, backbone)
    with pytest.raises(CheckpointMismatchError, match="not a ConvNeXt checkpoint"):
        convert_official_checkpoint(timm_source("resnet50").state_dict(), build_backbone(cfg_for("convnext_l")))
    # A deeper ConvNeXt in the mmpretrain layout: refused naming the file's keys (timm's filter
    # alone would stop at a bare KeyError).
    cx = timm_source("convnext_l").state_dict()
    cx.update({k.replace("stages.2.blocks.0.", "stages.2.blocks.5."): v.clone() for k, v in cx.items()
               if k.startswith("stages.2.blocks.0.")})
    with pytest.raises(CheckpointMismatchError) as e:
        convert_official_checkpoint(mmpretrain_convnext(cx), build_backbone(cfg_for("convnext_l")))
    assert "has 9 weights the backbone has no place for (backbone.stages.2.5.gamma, " in str(e.value)
    assert "backbone.stages.2.5.pointwise_conv1.weight" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", CONFIGS)
def test_one_rein_per_stage_refines_every_block_and_the_queries_are_their_sum(name):
    torch.manual_seed(0)
    model = build_model(cfg_for(name)).train()
    reins = model.backbone.reins
    assert [r.num_layers for r in reins] == list(DEPTHS)
    assert [r.embed_dim for r in reins] == model.backbone.stage_channels
    queries = model.backbone.linked_queries()
    torch.testing.assert_close(queries, sum(r.linked_queries() for r in reins))
    losses = model([sample(), sample()])
    sum(losses.values()).backward()
    for i, r in enumerate(reins):  # every stage's Rein trains, the CNN does not
        assert r.learnable_tokens_a.grad.abs().sum() > 0, i
    assert all(p.grad is None for p in model.backbone.vit.parameters())


def test_a_release_checkpoint_keeps_the_per_stage_rein_names(tmp_path):
    """The release stores backbone.reins.<stage>.<param>, the head under decode_head, and may
    carry the ResNet (mmseg names) under backbone.*."""
    torch.manual_seed(0)
    model = build_model(cfg_for("resnet50"))
    release = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone.reins."):
            release[k] = v
        elif k.startswith("pixel_decoder."):
            release["decode_head." + k] = v
        elif k.startswith("predictor."):
            release["decode_head." + k[len("predictor."):]] = v
    release.update({"backbone." + k: v for k, v in mmseg_resnet(timm_source("resnet50").state_dict()).items()})
    fresh = build_model(cfg_for("resnet50"))
    out, report = convert_release_checkpoint(release, fresh)
    fresh.load_state_dict(out, strict=True)
    for k, v in model.state_dict().items():
        if not k.startswith("backbone.vit."):
            assert torch.equal(fresh.state_dict()[k], v), k
    assert "backbone.reins.3.learnable_tokens_b" in out and report.vfm_keys


@pytest.mark.parametrize("fmt", ["mmseg ResNetV1c", "mmpretrain ConvNeXt"])
def test_convert_pretrained_then_train_from_the_file(fmt, tmp_path, capsys):
    """tools/convert_pretrained.py writes MODEL.WEIGHTS for a CNN config, and training accepts
    it as the whole frozen network (batch-norm statistics, ConvNeXt's new stage norms
    included), refusing nothing: no weight stays random."""
    from rein_d2.engine import load_model_weights
    name, write = FORMATS[fmt]
    source = timm_source(name).state_dict()
    torch.save(write(source), tmp_path / "official.pth")
    assert convert_pretrained.main(["--config-file", config_path(CONFIGS[name]), "--input", str(tmp_path / "official.pth"),
                      "--output", str(tmp_path / "w.pth"), "MODEL.CNN.DEPTHS", str(list(DEPTHS))]) == 0
    printed = capsys.readouterr().out
    assert TIMM[name] in printed
    if name == "convnext_l":
        assert "dropped 2 keys: head.fc.weight, head.fc.bias" in printed  # the file's names
        assert "initial values (6 keys): stage_norms.0.weight" in printed
    cfg = cfg_for(name, "MODEL.ALLOW_RANDOM_WEIGHTS", False, "MODEL.WEIGHTS", str(tmp_path / "w.pth"))
    model = build_model(cfg)
    load_model_weights(cfg, model, inference=False)
    for k, v in source.items():
        if not k.startswith(("fc.", "head.fc.")):
            assert torch.equal(model.backbone.vit.state_dict()[k], v), k
