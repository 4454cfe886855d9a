"""Frozen timm CNNs (ResNet-50/101 with the deep "V1c" stem, ConvNeXt-L) refined by Rein, as
detectron2 backbones, in the layout of the reference release's CNN variant.

Each of the four stages has its own Rein module, whose layers are that stage's residual blocks
and whose width is that stage's channels: after every block, the feature map is flattened to
[B, H*W, C] (no prefix tokens), refined and reshaped back. The stage outputs are res2..res5
(strides 4, 8, 16, 32). With the query link, each stage's Rein makes queries [m, D]
(docs/method.md section 2), and the head's queries are their sum.

As the release's mmpretrain ConvNeXt (out_indices 0-3, gap_before_final_norm False), each
ConvNeXt stage output passes through its own LayerNorm2d over channels (eps 1e-6): stages 0-2
through new norms (``vit.stage_norms``: no ImageNet file holds them; the converter writes their
initial weight 1 / bias 0, which stay frozen), stage 3 through the network's final norm
(timm's ``head.norm``, the official file's ``norm``). ResNet stage outputs are used as they are.

The network is kept under ``vit``, rein_d2's name for the frozen foundation model whatever its
design, so that light checkpoints, the weight checks and the converters treat it like a ViT.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import timm
import torch
from detectron2.modeling import Backbone, ShapeSpec
from timm.layers import LayerNorm2d
from torch import nn

from ..rein import Rein

__all__ = ["CNN_ARCHS", "CNNArch", "ReinCNN"]


@dataclass(frozen=True)
class CNNArch:
    family: str  # "resnet" or "convnext"
    timm_name: str


# (family, size) -> timm definition. timm's resnet50c / resnet101c have the release's
# ResNetV1c layout: a deep stem of three 3x3 convolutions (32, 32, 64) and plain strided
# shortcuts, with the same tensor names as the official ImageNet weights below its stem.
CNN_ARCHS: Dict[tuple, CNNArch] = {
    ("resnet", "r50"): CNNArch("resnet", "resnet50c"),
    ("resnet", "r101"): CNNArch("resnet", "resnet101c"),
    ("convnext", "large"): CNNArch("convnext", "convnext_large"),
}


class ReinCNN(Backbone):
    """A frozen timm CNN with one Rein module per stage; outputs res2..res5.

    Args:
        arch: which CNN (see ``CNN_ARCHS``).
        rein: Rein keyword arguments shared by the four stages (see :class:`Rein`); None runs
            the plain frozen CNN.
        freeze: freeze the CNN and keep it in eval mode (batch-norm statistics fixed).
        depths: blocks per stage, overriding the architecture's (small test models).
    """

    def __init__(self, *, arch: CNNArch, rein: Optional[dict] = None, freeze: bool = True,
                 depths: Optional[Sequence[int]] = None):
        super().__init__()
        self.arch = arch
        self.family = arch.family
        overrides = {}
        if depths:
            overrides["layers" if arch.family == "resnet" else "depths"] = tuple(depths)
        self.vit = timm.create_model(arch.timm_name, pretrained=False, num_classes=0, global_pool="",
                                     **overrides)
        stages = self._stages()
        self.stage_channels = [self._channels(s) for s in stages]
        self.stage_depths = [len(self._blocks(s)) for s in stages]
        if self.family == "convnext":  # under vit: frozen, and written by the converter
            self.vit.add_module("stage_norms", nn.ModuleList(
                LayerNorm2d(c, eps=1e-6) for c in self.stage_channels[:3]))
        self.reins = None
        if rein is not None:
            self.reins = nn.ModuleList(
                Rein(num_layers=n, embed_dim=c, **rein)
                for n, c in zip(self.stage_depths, self.stage_channels))
        self.freeze = freeze
        if freeze:
            self.vit.requires_grad_(False)
            self.vit.eval()
        self._out_features = ["res2", "res3", "res4", "res5"]

    # -- the timm network's parts ---------------------------------------------------------
    def _stages(self) -> List[nn.Module]:
        if self.family == "resnet":
            return [getattr(self.vit, f"layer{i}") for i in range(1, 5)]
        return list(self.vit.stages)

    def _blocks(self, stage: nn.Module) -> nn.Sequential:
        return stage if self.family == "resnet" else stage.blocks

    def _channels(self, stage: nn.Module) -> int:
        last = self._blocks(stage)[-1]
        if self.family == "resnet":
            return last.conv3.out_channels if hasattr(last, "conv3") else last.conv2.out_channels
        return last.conv_dw.out_channels

    def _out_norm(self, i: int) -> nn.Module:
        """The norm of stage i's output (ConvNeXt; the release's norm{i})."""
        return self.vit.head.norm if i == 3 else self.vit.stage_norms[i]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.vit
        if self.family == "resnet":
            return net.maxpool(net.act1(net.bn1(net.conv1(x))))
        return net.stem(x)

    # -- detectron2 Backbone interface ------------------------------------------------------
    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {k: ShapeSpec(channels=c, stride=s) for k, c, s in
                zip(self._out_features, self.stage_channels, (4, 8, 16, 32))}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.vit.eval()
        return self

    def linked_queries(self) -> Optional[torch.Tensor]:
        """The sum of the four stages' linked queries [m, D], or None without the link."""
        if self.reins is None or not self.reins[0].link_token_to_query:
            return None
        return sum(r.linked_queries() for r in self.reins)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self._stem(x)
        outs = []
        for i, stage in enumerate(self._stages()):
            if self.family == "convnext":
                x = stage.downsample(x)
            for j, block in enumerate(self._blocks(stage)):
                x = block(x)
                if self.reins is not None:
                    b, c, h, w = x.shape
                    tokens = self.reins[i](x.flatten(2).transpose(1, 2), j, num_prefix_tokens=0)
                    x = tokens.transpose(1, 2).reshape(b, c, h, w)
            outs.append(self._out_norm(i)(x) if self.family == "convnext" else x)
        return dict(zip(self._out_features, outs))
