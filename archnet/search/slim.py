"""Slimmable Arch-Net unit: one max-size 3x3 weight, switchable BN and quantizers per slice.

For a slice key ``k`` with ``C_k`` output channels and input-channel index set ``I``:

    y = act_k(BN_k(conv3x3(x, q_k(W[:C_k, I]), stride, pad 1)))

``W`` is shared by every slice (slimmable weights, Yu et al. 2019); ``BN_k``, the weight
quantizer ``q_k`` and the activation quantizer ``act_k`` belong to the slice alone, so each
slice has its own statistics and quantizer scales (DoReFa weight scales are computed from
the sliced tensor; LSQ steps are per-slice parameters). While ``quantize`` is off the unit
is float: ``q_k`` is skipped and ``act_k`` is a plain ReLU. :meth:`export` returns the
:class:`~archnet.ops.units.ConvUnit` that computes exactly the same function.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.ops.quant import QuantConfig, make_activation, make_weight_quantizer
from archnet.ops.units import ConvUnit

Index = slice | Tensor | None


def float_config(quant: QuantConfig) -> QuantConfig:
    """The float counterpart of ``quant`` (same logit clip): what the search trains before
    quantization starts and what :meth:`SlimUnit.export` uses while ``quantize`` is off."""
    return QuantConfig(name="fp32", logit_clip=quant.logit_clip)


class SlimUnit(nn.Module):
    """``cin_max -> cout_max`` 3x3 unit with slices ``outs = {key: C_k}`` (module docstring)."""

    def __init__(self, cin: int, cout: int, stride: int, quant: QuantConfig, outs: Mapping[str, int],
                 quantize_weight: bool = True) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.outs = dict(outs)
        self.quant, self.quantize_weight = quant, quantize_weight
        self.quantize = False
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.ModuleDict({k: nn.BatchNorm2d(c) for k, c in self.outs.items()})
        self.wq = nn.ModuleDict({k: make_weight_quantizer(quant.weight) if quantize_weight else nn.Identity()
                                 for k in self.outs})
        self.act = nn.ModuleDict({k: make_activation(quant.act) for k in self.outs})

    def sliced_weight(self, key: str, index: Index = None) -> Tensor:
        w = self.weight[: self.outs[key]]
        return w if index is None else w[:, index]

    def forward(self, x: Tensor, key: str, index: Index = None) -> Tensor:
        w = self.sliced_weight(key, index)
        if self.quantize:
            w = self.wq[key](w)
        y = self.bn[key](F.conv2d(x, w, None, self.stride, 1))
        return self.act[key](y) if self.quantize else F.relu(y)

    @torch.no_grad()
    def export(self, key: str, index: Index = None) -> ConvUnit:
        """The standalone unit of slice ``key`` (float while ``quantize`` is off)."""
        w = self.sliced_weight(key, index)
        quant = self.quant if self.quantize else float_config(self.quant)
        unit = ConvUnit(w.shape[1], w.shape[0], self.stride, quant, quantize_weight=self.quantize_weight)
        unit.conv.weight.copy_(w)
        unit.bn.load_state_dict(self.bn[key].state_dict())
        if self.quantize:
            unit.conv.weight_quantizer.load_state_dict(self.wq[key].state_dict())
            unit.act.load_state_dict(self.act[key].state_dict())
        return unit.train(self.training)

    @torch.no_grad()
    def load_unit(self, unit: ConvUnit, key: str) -> None:
        """Copy a float ``ConvUnit`` of slice ``key``'s shape into the top-left of the weight."""
        c_out, c_in = unit.conv.weight.shape[:2]
        self.weight[:c_out, :c_in].copy_(unit.conv.weight)
        self.bn[key].load_state_dict(unit.bn.state_dict())

    def extra_repr(self) -> str:
        return f"{self.cin}, {self.cout}, stride={self.stride}, slices={self.outs}"
