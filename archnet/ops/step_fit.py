"""LSQ steps fitted to a layer's outputs on real inputs instead of to its weights.

:func:`archnet.ops.lsq.mse_step` minimises the weight error ``sum (w - q(w))^2``, as if every
tap saw an independent input; neighbouring taps of a feature map see nearly the same value,
so their errors add up coherently. :func:`output_step` picks, per output channel, the step
with the least *output* error on a batch:

``argmin_s sum_{n,y,x} (layer(x; q_s(W)) - layer(x; W))^2_c`` over ``s = (k / K) s_max``,
``k = 1..K`` (``s_max``: the clip-free step, :func:`~archnet.ops.lsq.clip_free_step`); one step for the whole
tensor when the quantizer is per tensor. Used where real inputs are at hand: the start of a
student copied from another run (``distill.init_student_steps=outputs``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from archnet.ops.layers import QConv2d, QLinear
from archnet.ops.lsq import LsqWeight, clip_free_step, least_error_step

OUTPUT_CANDIDATES = 50


def _apply(layer: QConv2d | QLinear, x: Tensor, weight: Tensor) -> Tensor:
    if isinstance(layer, QConv2d):
        return layer._conv_forward(x, weight, None)
    return F.linear(x, weight)


@torch.no_grad()
def output_step(layer: QConv2d | QLinear, x: Tensor, candidates: int = OUTPUT_CANDIDATES) -> Tensor:
    """The step(s) of ``layer.weight_quantizer`` (an :class:`LsqWeight`) with the least output
    error on ``x`` (see the module docstring); shaped like the quantizer's ``alpha``."""
    q = layer.weight_quantizer
    if not isinstance(q, LsqWeight):
        raise TypeError(f"output_step needs an LSQ weight quantizer, not {type(q).__name__}")
    w = layer.weight.detach()
    dims = tuple(range(1, w.dim())) if q.per_channel else tuple(range(w.dim()))
    s_max = clip_free_step(w, dims, True, q.qn, q.qp)
    ref = _apply(layer, x, w)
    out_dims = tuple(d for d in range(ref.dim()) if d != 1) if q.per_channel else tuple(range(ref.dim()))

    def error(s: Tensor) -> Tensor:
        wq = torch.round(torch.clamp(w / s, q.qn, q.qp)) * s
        return (_apply(layer, x, wq) - ref).pow(2).sum(out_dims).view(s_max.shape)

    best = least_error_step(s_max, error, candidates)
    return best if q.per_channel else best.reshape(())
