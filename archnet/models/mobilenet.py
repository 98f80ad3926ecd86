"""MobileNetV2 (torchvision parameter names) and MobileNetV1 teachers with taps.

MobileNetV2 follows ``torchvision.models.mobilenet_v2``: ``features.0`` is the 3x3/2 stem
(``features.0.0`` conv, ``.1`` BN), ``features.1..17`` inverted residuals whose ``conv``
sequence holds ``[expand (conv, BN), ] depthwise (conv, BN), project conv, project BN``,
``features.18`` the final 1x1 conv, and ``classifier.1`` the FC (``classifier.0`` is
dropout), so torchvision state dicts load strictly. Channels at width multiplier ``a`` are
``make_divisible(c * a, 8)`` and the last width ``make_divisible(1280 * max(1, a), 8)``.

MobileNetV1 (Howard et al. 2017) uses our own names: ``stem`` (3x3/2 conv, BN, ReLU),
``layers.i.dw`` (3x3 depthwise, BN, ReLU) and ``layers.i.pw`` (1x1, BN, ReLU), ``fc``.

Taps (block suffixes, the last is the block output; nothing tapped is modified in place):

* inverted residual with expansion and residual add: ``expand``, ``dw``, ``project``
  (the linear bottleneck, pre-add), ``out``;
* without the add the projection *is* the output: ``expand``, ``dw``, ``out``; the t=1
  block (``features.1``) has no expansion: ``dw``, ``out``;
* ``features.18`` and every other conv-BN-activation block: ``out``;
* MobileNetV1 block: ``dw``, ``out`` (after the pointwise conv).

Both heads are global-average-pool + FC, so any input size works.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from archnet.models.taps import TapBlock, TappedChain

# (expansion t, channels c, repeats n, first stride s), MobileNetV2 paper table 2.
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))
# (channels, stride of the depthwise conv), MobileNetV1 paper table 1.
V1_SETTING = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``divisor``), never going
    below 90 % of ``v`` (the MobileNet channel rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(TapBlock, nn.Sequential):
    """``act(BN(conv_k(x)))`` with children ``0`` (conv), ``1`` (BN), ``2`` (activation);
    one tap, ``out``. ``act=None`` leaves the output linear."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())  # never in place: the output may be a tap
        super().__init__(*layers)

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        for layer in self:
            x = layer(x)
        return [x]


class InvertedResidual(TapBlock):
    """``[expand 1x1] -> depthwise 3x3 (stride) -> linear 1x1 project [+ x]`` (MobileNetV2)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        self.has_expand = expand_ratio != 1
        layers: list[nn.Module] = [ConvBNAct(cin, hidden, 1)] if self.has_expand else []
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout
        suffixes = (["expand"] if self.has_expand else []) + ["dw"]
        suffixes += ["project", "out"] if self.use_res_connect else ["out"]
        self.tap_suffixes = tuple(suffixes)

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        taps: list[Tensor] = []
        h = x
        n_act = 1 + self.has_expand
        for layer in list(self.conv)[:n_act]:
            h = layer(h)
            taps.append(h)
            if len(taps) == n:
                return taps
        project = self.conv[-1](self.conv[-2](h))
        taps.append(project)
        if self.use_res_connect and len(taps) < n:
            taps.append(project + x)
        return taps[:n]


class MobileNetV2(TappedChain):
    """MobileNetV2 with torchvision's module tree (see the module docstring)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 setting: Sequence[Sequence[int]] = V2_SETTING, dropout: float = 0.2,
                 in_channels: int = 3, stem_stride: int = 2) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(in_channels, cin, 3, stem_stride)]
        for t, c, n, s in setting:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNAct(cin, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        self.num_features = self.last_channel
        _init_weights(self)

    @property
    def block_names(self) -> list[str]:
        return [f"features.{i}" for i in range(1, len(self.features))]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.features[0](x)

    def forward_head(self, h: Tensor) -> Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class DepthwiseSeparable(TapBlock):
    """``pw(dw(x))``: 3x3 depthwise (stride) + BN + ReLU, then 1x1 + BN + ReLU; taps dw, out."""

    tap_suffixes = ("dw", "out")

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, stride, groups=cin, act=nn.ReLU)
        self.pw = ConvBNAct(cin, cout, 1, act=nn.ReLU)

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        h = self.dw(x)
        return [h] if n == 1 else [h, self.pw(h)]


class MobileNetV1(TappedChain):
    """MobileNetV1: 3x3/2 stem, 13 depthwise-separable blocks, GAP + FC."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 setting: Sequence[Sequence[int]] = V1_SETTING, in_channels: int = 3,
                 stem_stride: int = 2) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.stem = ConvBNAct(in_channels, cin, 3, stem_stride, act=nn.ReLU)
        blocks = []
        for c, s in setting:
            cout = make_divisible(c * width_mult)
            blocks.append(DepthwiseSeparable(cin, cout, s))
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        _init_weights(self)

    @property
    def block_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def forward_head(self, h: Tensor) -> Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, unit/zero BN, N(0, 0.01) FC weights, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, **kw) -> MobileNetV2:
    return MobileNetV2(num_classes, width_mult, **kw)


def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0, **kw) -> MobileNetV1:
    return MobileNetV1(num_classes, width_mult, **kw)
