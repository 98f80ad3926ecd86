"""ResNet teachers with torchvision parameter names, and the tiny demo ResNet.

Names match ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layerN.M.convK``,
``downsample.0/1``, ``fc``) so torchvision state dicts load strictly. Every block exposes
taps (see :mod:`archnet.models.taps`); no tapped tensor is modified in place unless
``alias_preadd=True`` asks for the authors' aliasing bug (the pre-add tap then *is* the
block output, reference section 3.1).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.models.taps import TapBlock, TappedChain


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(TapBlock):
    """``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``; taps conv1, conv2 (pre-add), out."""

    expansion = 1
    tap_suffixes = ("conv1", "conv2", "out")

    def __init__(self, cin: int, planes: int, stride: int = 1, alias_preadd: bool = False) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (
            nn.Sequential(conv1x1(cin, planes, stride), nn.BatchNorm2d(planes))
            if stride != 1 or cin != planes
            else None
        )
        self.alias_preadd = alias_preadd

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        s1 = F.relu(self.bn1(self.conv1(x)))
        if n == 1:
            return [s1]
        s2 = self.bn2(self.conv2(s1))
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(s2 + shortcut)
        return [s1, out if self.alias_preadd else s2, out][:n]


class Bottleneck(TapBlock):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) with residual add; taps conv1, conv2, conv3 (pre-add), out."""

    expansion = 4
    tap_suffixes = ("conv1", "conv2", "conv3", "out")

    def __init__(self, cin: int, planes: int, stride: int = 1, alias_preadd: bool = False) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = (
            nn.Sequential(conv1x1(cin, out_ch, stride), nn.BatchNorm2d(out_ch))
            if stride != 1 or cin != out_ch
            else None
        )
        self.alias_preadd = alias_preadd

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        taps = [F.relu(self.bn1(self.conv1(x)))]
        if n > 1:
            taps.append(F.relu(self.bn2(self.conv2(taps[0]))))
        if n > 2:
            s3 = self.bn3(self.conv3(taps[1]))
            shortcut = x if self.downsample is None else self.downsample(x)
            out = F.relu(s3 + shortcut)
            taps += [out if self.alias_preadd else s3, out]
        return taps[:n]


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(TappedChain):
    """ResNet with stages ``layer1..layerN``; ``stem='imagenet'`` (7x7/2 + 3x3/2 max-pool) or
    ``'small'`` (3x3/1 conv + 2x2/2 max-pool, for 32-64 px inputs)."""

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        stem: str = "imagenet",
        in_channels: int = 3,
        width_multiplier: float = 1.0,
        alias_preadd: bool = False,
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        widths = [max(8, int(round(w * width_multiplier))) for w in widths]
        stem_width = widths[0]
        self.stem_kind = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        elif stem == "small":
            self.conv1 = conv3x3(in_channels, stem_width)
            self.maxpool = nn.MaxPool2d(2, 2)
        else:
            raise ValueError(f"stem={stem!r}: one of imagenet, small")
        self.bn1 = nn.BatchNorm2d(stem_width)
        self._block_names: list[str] = []
        cin = stem_width
        for i, (n_blocks, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block_cls(cin, planes, stride if j == 0 else 1, alias_preadd))
                cin = planes * block_cls.expansion
                self._block_names.append(f"layer{i + 1}.{j}")
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def block_names(self) -> list[str]:
        return self._block_names

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def forward_head(self, h: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(h), 1))


def tiny_resnet(num_classes: int = 10, widths: Sequence[int] = (16, 32, 64), **kw) -> ResNet:
    """The demo teacher: small stem, one basic block per stage, 1x1 strided projections."""
    return ResNet("basic", [1] * len(widths), widths, num_classes, stem="small", **kw)


def resnet18(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet("basic", (2, 2, 2, 2), num_classes=num_classes, **kw)


def resnet34(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet("basic", (3, 4, 6, 3), num_classes=num_classes, **kw)


def resnet50(num_classes: int = 1000, **kw) -> ResNet:
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes=num_classes, **kw)
