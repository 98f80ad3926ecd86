"""Weight and activation quantizers (fake quantization with straight-through rounding).

DoReFa-Net (Zhou et al. 2016, arXiv 1606.06160) in the Arch-Net variant (reference 4.1):

* :class:`DorefaWeight` -- per-tensor "normal" mode for every 3x3 conv;
* :class:`DorefaGaussianWeight` -- per-row "gaussian" mode for the classifier (8 bits);
* :class:`FixedRangeAct` -- ``round(clip(0.1 x, 0, 1) M) / M`` after every BN (also the ReLU).

LSQ (Esser et al. 2020, arXiv 1902.08153), reference 4.2: :class:`LsqWeight`,
:class:`LsqAct` (defined in :mod:`archnet.ops.lsq`, re-exported here).

Each quantizer takes ``bits`` in 2..8 (float is the factory's identity, see
:mod:`archnet.ops.quant`) and has ``export_grid(x)`` returning the integer codes of ``x``
(:class:`~archnet.ops.grid.IntGrid`); activation quantizers also have ``act_grid()``, the
static requantization rule (:class:`~archnet.ops.grid.ActGrid`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from archnet.ops.grid import ActGrid, IntGrid, check_bits
from archnet.ops.lsq import LsqAct, LsqWeight
from archnet.ops.ste import DorefaWeightFn, FixedRangeActFn, dorefa_levels, round_half_up, round_half_up_ste

__all__ = ["DorefaGaussianWeight", "DorefaWeight", "FixedRangeAct", "LsqAct", "LsqWeight"]


class DorefaWeight(nn.Module):
    """DoReFa "normal" weights, per tensor (reference 4.1) or per output channel.

    ``t = tanh(W)``, ``s = 2 mean|t|`` (over the tensor, or over each output channel's row
    with ``per_channel=True``: a per-channel scale folds into the BN that follows), ``u = clip(t/s, -1/2, 1/2) + 1/2``, ``M = 2^b - 1``,
    ``q = (floor(u M + 1/2)/M - 1/2) s``: ``M + 1`` uniform levels in ``[-s/2, s/2]`` with no
    zero level (2 bits: ``{+-s/6, +-s/2}``). Backward: identity from ``q`` to ``t`` (clip,
    rounding and the dependence of ``s`` ignored), then ``tanh'``.
    """

    def __init__(self, bits: int, per_channel: bool = False) -> None:
        super().__init__()
        self.bits, self.per_channel = check_bits(bits), per_channel

    def forward(self, w: Tensor) -> Tensor:
        return DorefaWeightFn.apply(w, self.bits, self.per_channel)

    @torch.no_grad()
    def export_grid(self, w: Tensor) -> IntGrid:
        """Codes ``2k - M`` (odd integers in ``[-M, M]``) with scale ``s / (2M)``."""
        m = 2**self.bits - 1
        k, s = dorefa_levels(torch.tanh(w), self.bits, self.per_channel)
        return IntGrid(k.long() * 2 - m, s / (2 * m), self.bits, -m, m, step=2)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


class DorefaGaussianWeight(nn.Module):
    """DoReFa "gaussian" weights, per output row (reference 4.1; the classifier at 8 bits).

    ``t = tanh(W)``, ``t_c = t - mean_row(t)``, ``s_r = 2 max_row|t_c|``,
    ``q = (round((t_c/s_r + 1/2) M)/M - 1/2) s_r`` (round half up). Gradients flow through
    the centring and ``s_r`` by autograd; the rounding is straight-through. The row mean is
    discarded: quantized rows have (close to) zero mean.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits)

    def _centred(self, w: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.tanh(w).flatten(1)
        tc = t - t.mean(1, keepdim=True)
        s = (2.0 * tc.abs().amax(1, keepdim=True)).clamp_min(torch.finfo(w.dtype).tiny)
        return tc, s

    def forward(self, w: Tensor) -> Tensor:
        m = float(2**self.bits - 1)
        tc, s = self._centred(w)
        k = round_half_up_ste((tc / s + 0.5) * m)
        return ((k / m - 0.5) * s).view_as(w)

    @torch.no_grad()
    def export_grid(self, w: Tensor) -> IntGrid:
        """Codes ``2k - M`` per row with scale ``s_r / (2M)`` of shape ``[rows, 1, ...]``."""
        m = 2**self.bits - 1
        tc, s = self._centred(w)
        k = round_half_up((tc / s + 0.5) * m).long()
        shape = (-1,) + (1,) * (w.dim() - 1)
        return IntGrid((2 * k - m).view_as(w), (s / (2 * m)).view(shape), self.bits, -m, m, step=2)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class FixedRangeAct(nn.Module):
    """Fixed-range activation (DoReFa activations with the Arch-Net multiplier, reference 4.1).

    ``y = floor(clip(m x, 0, 1) M + 1/2) / M`` with ``m = 0.1`` and ``M = 2^b - 1``: unsigned,
    per tensor, no learned scale, input range ``[0, 1/m]`` with step ``1/(m M)``, output in
    ``[0, 1]``. It is also the unit's ReLU. Gradient: ``m`` inside ``0 < m x < 1``, else 0.
    """

    def __init__(self, bits: int, multiplier: float = 0.1) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        if not multiplier > 0:
            raise ValueError(f"act_multiplier={multiplier!r}: must be > 0")
        self.multiplier = float(multiplier)

    def forward(self, x: Tensor) -> Tensor:
        return FixedRangeActFn.apply(x, self.bits, self.multiplier)

    def act_grid(self) -> ActGrid:
        m = 2**self.bits - 1
        return ActGrid(1.0 / (self.multiplier * m), 1.0 / m, 0, m, self.bits, "half_up")

    @torch.no_grad()
    def export_grid(self, x: Tensor) -> IntGrid:
        """Codes ``k in {0..M}`` with scale ``1/M``."""
        m = 2**self.bits - 1
        k = round_half_up((x * self.multiplier).clamp(0, 1) * m).long()
        return IntGrid(k, torch.tensor(1.0 / m), self.bits, 0, m)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, multiplier={self.multiplier}"
