"""Modules of a *deploy student*: BN folded, weights baked on their integer grid.

:func:`archnet.deploy.fold.deploy_student` swaps every Arch-Net unit of a trained
:class:`~archnet.models.student.ArchNetStudent` for these; the container modules (stem,
blocks) and their forward logic stay as they are. The same modules are exported to ONNX
(their autograd functions emit QDQ nodes, :mod:`archnet.deploy.qdq`), traced by
:func:`trace_deploy` for statistics, and interpreted in integers by
:mod:`archnet.deploy.intsim`.
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.deploy.qdq import ActQDQFn, QConvFn, QLinearFn, dequantize_bias
from archnet.ops.grid import ActGrid

FLOAT_BITS = 32
BIAS_MAX_CODE = 2**24
_INT32_MAX = 2**31 - 1


class _IntBias:
    """Mixin: the float ``bias`` optionally stored as int32 ``bias_codes * bias_scale``."""

    bias: Tensor
    bias_codes: Tensor | None
    bias_scale: Tensor | None
    scale: Tensor | None

    def _bias_args(self) -> tuple[Tensor, Tensor | None]:
        return (self.bias, None) if self.bias_codes is None else (self.bias_codes, self.bias_scale)

    @torch.no_grad()
    def quantize_bias(self, input_scale: float, max_code: int = BIAS_MAX_CODE) -> None:
        """Store the bias as int32 ``bias_codes * bias_scale`` with ``bias_scale = s_x s_w / 2^f``,
        a power-of-two fraction of the accumulator step ``s_x s_w`` per output channel: the
        largest ``f`` in 0..30 with ``|code| <= 2^24`` (exact in float32, so onnxruntime and
        PyTorch dequantize it identically). ``bias`` becomes the dequantized value."""
        if self.scale is None:
            return
        step = self.scale.double().abs().clamp_min(1e-30) * input_scale
        ratio = (self.bias.double().abs() / step).clamp_min(1e-30)
        frac = torch.floor(torch.log2(max_code / ratio)).clamp(0, 30)
        bscale = (step / torch.pow(2.0, frac)).float()
        codes = torch.round(self.bias.double() / bscale.double())
        overflow = codes.abs().flatten() > _INT32_MAX
        if bool(overflow.any()):
            if getattr(self, "codes", None) is None or bool((self.scale.flatten()[overflow] == 1).any()):
                raise OverflowError("bias does not fit int32 on the accumulator grid")
            # weights over 2^31 times finer than the bias: a constant channel (see below)
            self.codes, self.scale = constant_channels_on_a_unit_scale(self.codes, self.scale, overflow)
            return self.quantize_bias(input_scale, max_code)
        self.bias_codes, self.bias_scale = codes.to(torch.int32), bscale
        self.bias = dequantize_bias(self.bias_codes, self.bias_scale)


def constant_channels_on_a_unit_scale(codes: Tensor, scale: Tensor,
                                      constant: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Channels that output their bias only get codes 0 and scale 1: the same (or, for a
    near-zero scale, a negligibly different) output, on a step that an int32 bias and ONNX's
    ``DequantizeLinear`` (scale > 0) accept. ``constant`` (per output channel) defaults to a
    scale of exactly 0 (a BN gain ``gamma = 0``, e.g. fitted to a dead teacher channel);
    :meth:`_IntBias.quantize_bias` adds the channels whose accumulator step is more than 2^31
    times finer than their bias (a gain of about 1e-10: the weights' share of the output is
    below ``sum |codes| * max input code / 2^31`` of the bias)."""
    dead = scale.flatten() == 0 if constant is None else constant
    if not bool(dead.any()):
        return codes, scale
    codes, scale = codes.clone(), scale.clone()
    codes[dead] = 0
    scale.view(-1)[dead] = 1.0
    return codes, scale


class DeployConv(_IntBias, nn.Module):
    """``act(conv3x3(x, W_eff) + b_eff)``: a :class:`~archnet.ops.units.ConvUnit` with BN folded.

    Quantized weights are ``codes * scale`` (one scale per output channel: the weight
    quantizer's scale times the BN gain ``gamma/sigma`` times the activation rescale
    ``r = out_scale/in_scale``); float weights are ``weight``. ``act`` is ``None`` for a
    float ReLU, else the :class:`~archnet.ops.grid.ActGrid` applied as
    ``clip(round(z / out_scale), qmin, qmax) * out_scale`` on the rescaled ``z``. ``bias`` is
    float32; after :meth:`quantize_bias` it is the value of int32 ``bias_codes * bias_scale``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 bias: Tensor, act: ActGrid | None, codes: Tensor | None = None,
                 scale: Tensor | None = None, weight: Tensor | None = None, w_bits: int = FLOAT_BITS,
                 w_method: str = "none") -> None:
        super().__init__()
        if (codes is None) == (weight is None):
            raise ValueError("DeployConv needs either integer codes (+ scale) or a float weight")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = stride, groups
        self.act, self.w_bits, self.w_method = act, w_bits, w_method
        if codes is not None:
            codes, scale = constant_channels_on_a_unit_scale(codes, scale)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("bias_codes", None)
        self.register_buffer("bias_scale", None)

    @property
    def a_bits(self) -> int:
        """Bits of the output activation (32 for a float ReLU)."""
        return FLOAT_BITS if self.act is None else self.act.bits

    def effective_weight(self) -> Tensor:
        if self.codes is None:
            return self.weight
        return self.codes.to(self.scale.dtype) * self.scale.view(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.codes is None:
            z = F.conv2d(x, self.weight, self.bias, self.stride, 1, 1, self.groups)
        else:
            z = QConvFn.apply(x, self.codes, self.scale, *self._bias_args(), self.stride, self.groups)
        if self.act is None:
            return F.relu(z)
        return ActQDQFn.apply(z, self.act.out_scale, self.act.qmin, self.act.qmax)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, groups={self.groups}, "
                f"w_bits={self.w_bits}, act={self.act}")


class DeployMerge(nn.Module):
    """``CBRQ(concat[main, shortcut])`` with explicit channel slices (traceable by ``torch.fx``)."""

    def __init__(self, units: list[DeployConv], main_ch: int, short_ch: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.main_ch, self.short_ch = main_ch, short_ch

    def forward(self, main: Tensor, shortcut: Tensor) -> Tensor:
        n = len(self.units)
        if n == 1:
            return self.units[0](torch.cat([main, shortcut], 1))
        sm, ss = self.main_ch // n, self.short_ch // n
        outs = [u(torch.cat([main[:, i * sm:(i + 1) * sm], shortcut[:, i * ss:(i + 1) * ss]], 1))
                for i, u in enumerate(self.units)]
        return torch.cat(outs, 1)


class DeployHead(_IntBias, nn.Module):
    """``clip(FC(pool(h)), -c, c)``: pool is global average (``gap``) or flatten."""

    def __init__(self, kind: str, bias: Tensor, logit_clip: float | None, codes: Tensor | None = None,
                 scale: Tensor | None = None, weight: Tensor | None = None, w_bits: int = FLOAT_BITS,
                 w_method: str = "none") -> None:
        super().__init__()
        if (codes is None) == (weight is None):
            raise ValueError("DeployHead needs either integer codes (+ scale) or a float weight")
        self.kind, self.logit_clip, self.w_bits, self.w_method = kind, logit_clip, w_bits, w_method
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("bias_codes", None)
        self.register_buffer("bias_scale", None)

    def effective_weight(self) -> Tensor:
        if self.codes is None:
            return self.weight
        return self.codes.to(self.scale.dtype) * self.scale.view(-1, 1)

    def forward(self, h: Tensor) -> Tensor:
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1) if self.kind == "gap" else h, 1)
        if self.codes is None:
            z = F.linear(h, self.weight, self.bias)
        else:
            z = QLinearFn.apply(h, self.codes, self.scale, *self._bias_args())
        return z if self.logit_clip is None else torch.clamp(z, -self.logit_clip, self.logit_clip)


class _DeployTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (DeployConv, DeployHead)) or super().is_leaf_module(m, qualname)


def trace_deploy(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx`` graph of a deploy student with :class:`DeployConv` and :class:`DeployHead`
    as leaves: what integer simulation and layer statistics walk."""
    graph = _DeployTracer().trace(model)
    return torch.fx.GraphModule(model, graph)


def input_scales(model: nn.Module) -> dict[str, float | None]:
    """Activation step of the input of every :class:`DeployConv` / :class:`DeployHead`
    (``None`` when float, e.g. the image; the smallest step when a concat mixes steps)."""
    gm = trace_deploy(model)
    step: dict[str, float | None] = {}
    out: dict[str, float | None] = {}
    for n in gm.graph.nodes:
        ins = [step[a.name] for a in n.all_input_nodes]
        s_in = None if not ins or any(s is None for s in ins) else min(ins)  # type: ignore[type-var]
        m = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(m, (DeployConv, DeployHead)):
            out[n.target] = s_in
            step[n.name] = m.act.out_scale if isinstance(m, DeployConv) and m.act is not None else None
        else:
            step[n.name] = s_in
    return out
