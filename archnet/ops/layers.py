"""Convolution and linear layers whose weights pass through a quantizer on every forward."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class QConv2d(nn.Conv2d):
    """``conv2d(x, q(W))`` where ``q`` is ``weight_quantizer`` (identity when float)."""

    def __init__(self, *args, weight_quantizer: nn.Module | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else nn.Identity()

    def quantized_weight(self) -> Tensor:
        return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QLinear(nn.Linear):
    """``x q(W)^T + b`` where ``q`` is ``weight_quantizer`` (bias stays float)."""

    def __init__(self, *args, weight_quantizer: nn.Module | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else nn.Identity()

    def quantized_weight(self) -> Tensor:
        return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)
