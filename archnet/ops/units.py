"""Arch-Net units: the only building blocks a student is made of.

* :class:`ConvUnit` -- 3x3 conv (stride 1 or 2, pad 1, no bias, quantized weights) -> BN ->
  ReLU -> activation quantizer (``CBRQ`` in the reference).
* :class:`ConcatMerge` -- replaces ``relu(a + b)``: ``CBRQ(concat[a, b])``; when the concat
  would exceed ``max_in_channels`` it is cut into aligned channel slices, slice ``i`` of
  both inputs feeding its own unit, and the results concatenated (reference 1.2).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from archnet.ops.layers import QConv2d
from archnet.ops.quant import QuantConfig, make_activation, make_weight_quantizer


class ConvUnit(nn.Sequential):
    """``act(BN(conv3x3(x)))`` with quantized weights and activations."""

    def __init__(self, cin: int, cout: int, stride: int = 1, quant: QuantConfig | None = None,
                 quantize_weight: bool = True, groups: int = 1) -> None:
        quant = quant or QuantConfig()
        wq = make_weight_quantizer(quant.weight) if quantize_weight else None
        super().__init__()
        self.conv = QConv2d(cin, cout, 3, stride, 1, groups=groups, bias=False, weight_quantizer=wq)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_activation(quant.act)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")


def concat_slices(main_ch: int, short_ch: int, out_ch: int, max_in_channels: int) -> int:
    """The fewest slices ``n`` of a concat conv ``main_ch + short_ch -> out_ch`` such that each
    slice reads at most ``max_in_channels`` (``(main_ch + short_ch) / n``) and every width
    divides by ``n``; slice ``i`` reads slice ``i`` of both parts and writes output slice ``i``,
    so the shortcut must be as wide as the output (``ValueError`` otherwise)."""
    if main_ch + short_ch <= max_in_channels:
        return 1
    if short_ch == out_ch:
        for n in range(-(-(main_ch + short_ch) // max_in_channels), out_ch + 1):
            if main_ch % n == short_ch % n == out_ch % n == 0:
                return n
    raise ValueError(f"cannot slice a concat of {main_ch}+{short_ch}->{out_ch} channels under "
                     f"max_in_channels={max_in_channels}: slicing needs a shortcut as wide as the "
                     "output and widths that divide into slices")


class ConcatMerge(nn.Module):
    """``CBRQ(concat[main, shortcut])``, sliced (:func:`concat_slices`) so no unit sees more
    than ``max_in_channels``."""

    def __init__(self, main_ch: int, short_ch: int, out_ch: int, quant: QuantConfig | None,
                 max_in_channels: int = 512) -> None:
        super().__init__()
        self.main_ch, self.short_ch = main_ch, short_ch
        self.n_slices = concat_slices(main_ch, short_ch, out_ch, max_in_channels)
        sm, ss, so = (c // self.n_slices for c in (main_ch, short_ch, out_ch))
        self.units = nn.ModuleList(ConvUnit(sm + ss, so, 1, quant) for _ in range(self.n_slices))

    def forward(self, main: Tensor, shortcut: Tensor) -> Tensor:
        if self.n_slices == 1:
            return self.units[0](torch.cat([main, shortcut], 1))
        mains, shorts = main.chunk(self.n_slices, 1), shortcut.chunk(self.n_slices, 1)
        return torch.cat([u(torch.cat([m, s], 1)) for u, m, s in zip(self.units, mains, shorts)], 1)
