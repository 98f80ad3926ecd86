"""Autograd functions whose ONNX form is the QDQ representation of a deploy student.

Each function computes in PyTorch exactly what its ONNX nodes compute in onnxruntime, and
its ``symbolic`` (legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``)
emits those nodes:

* :class:`QConvFn` -- ``DequantizeLinear(codes, scale, axis=0) -> Conv(x, w, bias)``: integer
  weight initializer (int8, int16 for 8-bit DoReFa codes ``2k - 255``) with one float
  scale per output channel. The bias is ``DequantizeLinear(bias_codes, bias_scale, axis=0)``
  (int32) when the layer input is quantized, else a float initializer.
* :class:`QLinearFn` -- ``DequantizeLinear(codes, scale, axis=0) -> Gemm(x, w, bias, transB=1)``,
  bias as for the conv.

* :class:`ActQDQFn` -- ``Clip(x, qmin s, qmax s) -> QuantizeLinear(s) -> DequantizeLinear(s)``
  with a uint8 (int8 when signed) zero point 0: ``y = clip(round(x/s), qmin, qmax) s``
  (round half to even, as ``QuantizeLinear``). The ``Clip`` carries the b-bit range, the
  8-bit Q/DQ pair the integer grid.

Why an int32 bias with its own scale: onnxruntime's ``WeightBiasQuantization`` optimizer
rewrites a *float* bias of a Conv/Gemm whose inputs come from DequantizeLinear into int32 on
the accumulator grid ``s_x s_w``, which moves each channel by up to half an accumulator
step and flips activation codes; a bias that already is int32 + scale is left alone (see
:meth:`archnet.deploy.modules.DeployConv.quantize_bias` for the scale used).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _zero_point(g: Any, n: int, dtype: torch.dtype) -> Any:
    return g.op("Constant", value_t=torch.zeros(n, dtype=dtype))


def _const(g: Any, value: float) -> Any:
    return g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))


def _dq_per_channel(g: Any, codes: Any, scale: Any) -> Any:
    n = codes.type().sizes()[0]
    dtype = {"Char": torch.int8, "Short": torch.int16, "Int": torch.int32}[codes.type().scalarType()]
    return g.op("DequantizeLinear", codes, scale, _zero_point(g, n, dtype), axis_i=0)


def dequantize_bias(bias_codes: Tensor, bias_scale: Tensor) -> Tensor:
    """``float32(bias_codes) * bias_scale``, as onnxruntime's DequantizeLinear computes it."""
    return bias_codes.to(torch.float32) * bias_scale


class QConvFn(torch.autograd.Function):
    """``conv2d(x, codes * scale[:, None, None, None], bias)``, 3x3, padding 1; ``bias`` is a
    float tensor, or int32 ``bias_codes`` (then ``bias = bias_codes * bias_scale``)."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: Tensor, scale: Tensor, bias: Tensor, bias_scale: Tensor | None,  # type: ignore[override]
                stride: int, groups: int) -> Tensor:
        w = codes.to(x.dtype) * scale.view(-1, 1, 1, 1)
        b = bias if bias_scale is None else dequantize_bias(bias, bias_scale)
        return F.conv2d(x, w, b.to(x.dtype), stride, 1, 1, groups)

    @staticmethod
    def symbolic(g: Any, x: Any, codes: Any, scale: Any, bias: Any, bias_scale: Any, stride: int,
                 groups: int) -> Any:
        b = bias if _is_none(bias_scale) else _dq_per_channel(g, bias, bias_scale)
        return g.op("Conv", x, _dq_per_channel(g, codes, scale), b, kernel_shape_i=[3, 3],
                    strides_i=[stride, stride], pads_i=[1, 1, 1, 1], dilations_i=[1, 1], group_i=groups)


class QLinearFn(torch.autograd.Function):
    """``x (codes * scale[:, None])^T + bias`` (bias as for :class:`QConvFn`)."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: Tensor, scale: Tensor, bias: Tensor,  # type: ignore[override]
                bias_scale: Tensor | None) -> Tensor:
        b = bias if bias_scale is None else dequantize_bias(bias, bias_scale)
        return F.linear(x, codes.to(x.dtype) * scale.view(-1, 1), b.to(x.dtype))

    @staticmethod
    def symbolic(g: Any, x: Any, codes: Any, scale: Any, bias: Any, bias_scale: Any) -> Any:
        b = bias if _is_none(bias_scale) else _dq_per_channel(g, bias, bias_scale)
        return g.op("Gemm", x, _dq_per_channel(g, codes, scale), b, transB_i=1)


def _is_none(v: Any) -> bool:
    return v is None or (hasattr(v, "node") and v.node().mustBeNone())


class ActQDQFn(torch.autograd.Function):
    """``clip(round(x / s), qmin, qmax) * s`` (round half to even)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float, qmin: int, qmax: int) -> Tensor:  # type: ignore[override]
        return torch.round(x / scale).clamp_(qmin, qmax).mul_(scale)

    @staticmethod
    def symbolic(g: Any, x: Any, scale: float, qmin: int, qmax: int) -> Any:
        dtype = torch.uint8 if qmin >= 0 else torch.int8
        clipped = g.op("Clip", x, _const(g, qmin * scale), _const(g, qmax * scale))
        s = _const(g, scale)
        zp = g.op("Constant", value_t=torch.zeros((), dtype=dtype))
        q = g.op("QuantizeLinear", clipped, s, zp)
        return g.op("DequantizeLinear", q, s, zp)
