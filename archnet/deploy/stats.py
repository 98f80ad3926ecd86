"""Per-layer cost of a deploy student: parameters, MACs and BitOPs.

``MACs`` of a conv = ``H_out W_out C_out (C_in / groups) 9``; of the FC = ``in * out``.
``BitOPs = MACs * w_bits * a_bits`` where ``a_bits`` is the width of the layer's *input*
activation (32 for a float tensor, e.g. the raw image into the first conv, or a GAP output
that is not re-quantized) and ``w_bits`` that of its weights (32 when float).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from archnet.deploy.modules import FLOAT_BITS, DeployConv, DeployHead, trace_deploy


@dataclass
class LayerStat:
    """One conv or FC layer of a deploy student."""

    name: str
    kind: str  # conv | fc
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    w_bits: int
    a_bits: int
    out_bits: int

    @property
    def bitops(self) -> int:
        return self.macs * self.w_bits * self.a_bits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"bitops": self.bitops}


class _StatsInterp(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, input_bits: int) -> None:
        super().__init__(gm)
        self.input_bits = input_bits
        self.bits: dict[str, int] = {}
        self.layers: list[LayerStat] = []

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        ins = [a for a in n.all_input_nodes]
        in_bits = max((self.bits[a.name] for a in ins), default=self.input_bits)
        if n.op == "placeholder":
            self.bits[n.name] = self.input_bits
        elif n.op == "call_module" and isinstance(m := self.fetch_attr(n.target), (DeployConv, DeployHead)):
            x = self.env[ins[0]]
            self.layers.append(_layer(n.target, m, x, out, in_bits))
            self.bits[n.name] = m.a_bits if isinstance(m, DeployConv) else FLOAT_BITS
        else:
            self.bits[n.name] = in_bits
        return out


def _layer(name: str, m: nn.Module, x: Tensor, out: Tensor, a_bits: int) -> LayerStat:
    w = m.effective_weight()
    params = w.numel() + m.bias.numel()
    if isinstance(m, DeployConv):
        macs = out[0].numel() * w[0].numel()
        return LayerStat(name, "conv", tuple(x.shape[1:]), tuple(out.shape[1:]), params, macs,
                         m.w_bits, a_bits, m.a_bits)
    feats = x[0].numel() if m.kind == "flatten" else x.shape[1]
    pooled_bits = a_bits if m.kind == "flatten" else FLOAT_BITS  # GAP output is not re-quantized
    return LayerStat(name, "fc", tuple(x.shape[1:]), tuple(out.shape[1:]), params, feats * w.shape[0],
                     m.w_bits, pooled_bits, FLOAT_BITS)


@torch.no_grad()
def layer_stats(deploy: nn.Module, example_input: Tensor, input_bits: int = FLOAT_BITS) -> list[LayerStat]:
    """Conv and FC layers of ``deploy`` in execution order, for one sample of ``example_input``."""
    interp = _StatsInterp(trace_deploy(deploy), input_bits)
    interp.run(example_input[:1])
    return interp.layers


def totals(layers: list[LayerStat]) -> dict[str, int]:
    return {"params": sum(la.params for la in layers), "macs": sum(la.macs for la in layers),
            "bitops": sum(la.bitops for la in layers)}
