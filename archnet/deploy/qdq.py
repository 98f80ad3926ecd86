"""Autograd functions whose ONNX form is the QDQ representation of a deploy student.

Each function computes in PyTorch exactly what its ONNX nodes compute in onnxruntime, and
its ``symbolic`` (legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``)
emits those nodes:

* :class:`QConvFn` -- ``DequantizeLinear(codes, scale, axis=0) -> Conv(x, w, bias)``: integer
  weight initializer (int8, int16 for 8-bit DoReFa codes ``2k - 255``) with one float
  scale per output channel; float bias.
* :class:`QLinearFn` -- ``DequantizeLinear(codes, scale, axis=0) -> Gemm(x, w, bias, transB=1)``.
* :class:`ActQDQFn` -- ``Clip(x, qmin s, qmax s) -> QuantizeLinear(s) -> DequantizeLinear(s)``
  with a uint8 (int8 when signed) zero point 0: ``y = clip(round(x/s), qmin, qmax) s``
  (round half to even, as ``QuantizeLinear``). The ``Clip`` carries the b-bit range, the
  8-bit Q/DQ pair the integer grid.
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


class QConvFn(torch.autograd.Function):
    """``conv2d(x, codes * scale[:, None, None, None], bias)``, 3x3, padding 1."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: Tensor, scale: Tensor, bias: Tensor, stride: int,  # type: ignore[override]
                groups: int) -> Tensor:
        w = codes.to(x.dtype) * scale.view(-1, 1, 1, 1)
        return F.conv2d(x, w, bias, stride, 1, 1, groups)

    @staticmethod
    def symbolic(g: Any, x: Any, codes: Any, scale: Any, bias: Any, stride: int, groups: int) -> Any:
        n = codes.type().sizes()[0]
        dtype = {"Char": torch.int8, "Short": torch.int16}[codes.type().scalarType()]
        w = g.op("DequantizeLinear", codes, scale, _zero_point(g, n, dtype), axis_i=0)
        return g.op("Conv", x, w, bias, kernel_shape_i=[3, 3], strides_i=[stride, stride],
                    pads_i=[1, 1, 1, 1], dilations_i=[1, 1], group_i=groups)


class QLinearFn(torch.autograd.Function):
    """``x (codes * scale[:, None])^T + bias``."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: Tensor, scale: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, codes.to(x.dtype) * scale.view(-1, 1), bias)

    @staticmethod
    def symbolic(g: Any, x: Any, codes: Any, scale: Any, bias: Any) -> Any:
        n = codes.type().sizes()[0]
        dtype = {"Char": torch.int8, "Short": torch.int16}[codes.type().scalarType()]
        w = g.op("DequantizeLinear", codes, scale, _zero_point(g, n, dtype), axis_i=0)
        return g.op("Gemm", x, w, bias, transB_i=1)


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
