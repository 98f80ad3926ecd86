"""Learned Step Size Quantization (LSQ; Esser et al. 2020, arXiv 1902.08153), reference 4.2.

``q = round(clip(x / alpha, Qn, Qp)) * alpha`` with a learned step ``alpha``, rounding
half to even with a straight-through estimator. Gradients:

* ``dq/dx = 1`` for ``Qn <= x/alpha <= Qp``, else 0;
* ``dq/dalpha = round(v) - v`` inside (``v = x/alpha``), ``Qn`` below, ``Qp`` above, then
  multiplied by ``g = 1/sqrt(N Qp)``, ``N`` = elements sharing ``alpha`` (the whole tensor,
  batch included, for activations; one output channel for per-channel weights).

``alpha`` is initialised once, on the first *training* forward (per channel for per-channel
weights): ``init="mean"`` (the paper's) sets ``2 mean|x| / sqrt(Qp)``; ``init="mse"`` the step
of :data:`MSE_CANDIDATES` evenly spaced ones in ``(0, s_max]`` (``s_max``: the smallest step
that clips nothing) with the least ``sum (x - q(x))^2``, so one large entry among many small
ones (an identity tap next to conv weights) is not clipped. The ``init_state`` buffer records
it, so a reloaded model keeps its steps and never re-initialises. Under ``torch.distributed``
the initial step is averaged over ranks. A per-channel step takes its ``[C, 1, ...]`` shape at
that first forward (or when a checkpoint is loaded), so initialise before wrapping the model
in DDP.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from archnet.ops.grid import ActGrid, IntGrid, check_bits
from archnet.ops.quant import STEP_INITS
from archnet.ops.ste import grad_scale, round_ste

MSE_CANDIDATES = 100


def clip_free_step(x: Tensor, dims: tuple[int, ...], keepdim: bool, qn: int, qp: int) -> Tensor:
    """``s_max = max(max(x) / Qp, max(-x) / -Qn)`` over ``dims`` (the last term only when
    signed), at least 1e-8: the smallest step that clips nothing."""
    s_max = x.amax(dims, keepdim=keepdim).clamp_min(0) / qp
    if qn < 0:
        s_max = torch.maximum(s_max, (-x).amax(dims, keepdim=keepdim).clamp_min(0) / -qn)
    return s_max.clamp_min(1e-8)


def least_error_step(s_max: Tensor, error: Callable[[Tensor], Tensor], candidates: int) -> Tensor:
    """Elementwise ``argmin_s error(s)`` over ``s = (k / K) s_max``, ``k = 1..K``; ``error``
    maps a step tensor to errors of the same shape."""
    best, best_err = s_max, torch.full_like(s_max, float("inf"))
    for k in range(1, candidates + 1):
        s = s_max * (k / candidates)
        err = error(s)
        better = err < best_err
        best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
    return best


@torch.no_grad()
def mse_step(x: Tensor, dims: tuple[int, ...], keepdim: bool, qn: int, qp: int,
             candidates: int = MSE_CANDIDATES) -> Tensor:
    """``argmin_s sum_dims (x - s round(clip(x / s, Qn, Qp)))^2`` over ``s = (k / K) s_max``,
    ``k = 1..K``, ``s_max`` the clip-free step (:func:`clip_free_step`)."""
    def error(s: Tensor) -> Tensor:
        return (x - torch.round(torch.clamp(x / s, qn, qp)) * s).pow(2).sum(dims, keepdim=keepdim)

    return least_error_step(clip_free_step(x, dims, keepdim, qn, qp), error, candidates)


class LsqQuantizer(nn.Module):
    """Shared LSQ machinery: range, step parameter, one-time initialisation."""

    def __init__(self, bits: int, signed: bool, per_channel: bool = False, init: str = "mean") -> None:
        super().__init__()
        if init not in STEP_INITS:
            raise ValueError(f"LSQ step init {init!r}: one of {', '.join(STEP_INITS)}")
        self.init = init
        self.bits = check_bits(bits)
        self.signed, self.per_channel = bool(signed), bool(per_channel)
        self.qn = -(2 ** (bits - 1)) if signed else 0
        self.qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        # per-channel steps are resized to [C, 1, ...] at initialisation (or when loading)
        self.alpha = nn.Parameter(torch.ones(()))
        self.register_buffer("init_state", torch.zeros((), dtype=torch.uint8))
        self._initialized = False

    def _reduce_dims(self, x: Tensor) -> tuple[int, ...]:
        return tuple(range(1, x.dim())) if self.per_channel else tuple(range(x.dim()))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims, x = self._reduce_dims(x), x.detach()
        if self.init == "mse":
            a = mse_step(x, dims, self.per_channel, self.qn, self.qp)
        else:
            a = (2.0 * x.abs().mean(dims, keepdim=self.per_channel) / math.sqrt(self.qp)).clamp_min(1e-8)
        if dist.is_available() and dist.is_initialized():  # one step for every rank
            dist.all_reduce(a)
            a /= dist.get_world_size()
        self.set_step(a)

    def initialize_step(self, x: Tensor) -> None:
        """Set the step from ``x`` now, as the first training forward would (``init`` rule)."""
        self._initialize(x)

    @torch.no_grad()
    def set_step(self, alpha: Tensor) -> None:
        """Set the step (per-channel shape ``[C, 1, ...]``) and mark it initialised."""
        self.alpha.data = alpha.to(self.alpha.dtype).clone()
        self.init_state.fill_(1)
        self._initialized = True

    def _maybe_init(self, x: Tensor) -> None:
        if self.training and not self._initialized:
            if bool(self.init_state):  # loaded from a checkpoint
                self._initialized = True
            else:
                self._initialize(x)

    def quantize(self, x: Tensor) -> Tensor:
        self._maybe_init(x)
        n = x.numel() // self.alpha.numel() if self.per_channel else x.numel()
        alpha = grad_scale(self.alpha, 1.0 / math.sqrt(n * self.qp))
        return round_ste(torch.clamp(x / alpha, self.qn, self.qp)) * alpha

    @torch.no_grad()
    def export_grid(self, x: Tensor) -> IntGrid:
        """Codes ``round(clip(x/alpha, Qn, Qp))`` with scale ``alpha``."""
        alpha = self.alpha.detach()
        codes = torch.round(torch.clamp(x / alpha, self.qn, self.qp)).long()
        return IntGrid(codes, alpha.clone(), self.bits, self.qn, self.qp)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        alpha = state_dict.get(prefix + "alpha")
        if alpha is not None and alpha.shape != self.alpha.shape:  # per-channel shape
            self.alpha.data = torch.empty_like(alpha, device=self.alpha.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._initialized = bool(self.init_state)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{self.qn}, {self.qp}], per_channel={self.per_channel}, init={self.init}"


class LsqWeight(LsqQuantizer):
    """LSQ weights: signed, ``Qn = -2^(b-1)``, ``Qp = 2^(b-1) - 1`` (2 bits: ``{-2,-1,0,1} alpha``);
    per tensor, or per output channel with ``per_channel=True``."""

    def __init__(self, bits: int, per_channel: bool = False, init: str = "mean") -> None:
        super().__init__(bits, signed=True, per_channel=per_channel, init=init)

    def forward(self, w: Tensor) -> Tensor:
        return self.quantize(w)


class LsqAct(LsqQuantizer):
    """LSQ activations, per tensor: unsigned by default (``Qn = 0``, ``Qp = 2^b - 1``), so the
    quantizer is also a clipped ReLU; ``signed=True`` gives the signed range."""

    def __init__(self, bits: int, signed: bool = False, init: str = "mean") -> None:
        super().__init__(bits, signed=signed, init=init)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantize(x)

    def act_grid(self) -> ActGrid:
        a = float(self.alpha.detach())
        return ActGrid(a, a, self.qn, self.qp, self.bits, "half_even")
