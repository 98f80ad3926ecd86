"""Thinner blocks from a teacher block: keep the most important inner channels.

A residual block ``conv_1 -> bn_1 -> relu -> ... -> conv_n`` has inner channels (the outputs
of ``conv_1 .. conv_{n-1}``) that only the next conv reads. Keeping ``k ~ f C`` of them
removes their slices from ``conv_i``, ``bn_i`` and ``conv_{i+1}``'s input, so the student built
from the pruned block costs less and starts close to the teacher's function.

Importance of inner channel ``c`` (data-free, from the teacher's BN and the next conv):
``r_c ||W_{i+1}[:, c]||_F`` with ``r_c = sqrt(E[relu(z)^2])``, ``z ~ N(beta_c, gamma_c^2)`` the
channel after its BN in eval mode, ``E[relu(z)^2] = (m^2 + s^2) Phi(m/s) + m s phi(m/s)``
(``m = beta_c``, ``s = |gamma_c|``): the root-mean-square size of what the channel adds to the
next conv's output, the first-order error of dropping it.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def relu_rms(bn: nn.BatchNorm2d) -> Tensor:
    """``sqrt(E[relu(z)^2])`` per channel for ``z ~ N(bias, weight^2)`` (BN output, eval mode)."""
    m = bn.bias.detach().double()
    s = bn.weight.detach().double().abs().clamp_min(1e-12)
    a = m / s
    phi = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    return ((m * m + s * s) * cdf + m * s * phi).clamp_min(0).sqrt()


def channel_importance(bn: nn.BatchNorm2d, next_conv: nn.Conv2d) -> Tensor:
    """``relu_rms(bn)_c * ||next_conv.weight[:, c]||_F`` for every channel ``c`` (module docstring)."""
    norms = next_conv.weight.detach().double().pow(2).sum(dim=(0, 2, 3)).sqrt()
    return relu_rms(bn) * norms


def kept_count(channels: int, fraction: float, divisor: int = 1) -> int:
    """``round(fraction C / d) d``, at least ``d`` and at most ``C``."""
    return min(channels, max(divisor, round(fraction * channels / divisor) * divisor))


def kept_channels(bn: nn.BatchNorm2d, next_conv: nn.Conv2d, fraction: float, divisor: int = 1) -> Tensor:
    """Indices (ascending) of the :func:`kept_count` most important channels."""
    score = channel_importance(bn, next_conv)
    return score.topk(kept_count(len(score), fraction, divisor)).indices.sort().values


@torch.no_grad()
def _slice_conv(conv: nn.Conv2d, out_idx: Tensor | None = None, in_idx: Tensor | None = None) -> nn.Conv2d:
    w = conv.weight
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None)
    new.weight.copy_(w)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out_idx is None else conv.bias[out_idx])
    return new


@torch.no_grad()
def _slice_bn(bn: nn.BatchNorm2d, idx: Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).copy_(getattr(bn, name)[idx])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def prune_inner(block: nn.Module, fraction: float, divisor: int = 1) -> tuple[nn.Module, list[Tensor]]:
    """A copy of ``block`` (attributes ``conv1, bn1, ..., conv_n, bn_n``) whose inner channels
    are cut to ``fraction`` of each (a multiple of ``divisor``), the most important kept
    (module docstring), and the kept indices of ``conv_1 .. conv_{n-1}``'s outputs. Inner
    channels are pruned from the last to the first, so each importance uses the next conv
    as the student will see it."""
    if not 0 < fraction <= 1:
        raise ValueError(f"inner width {fraction!r}: must be in (0, 1]")
    n = sum(1 for i in range(1, 10) if hasattr(block, f"conv{i}"))
    pruned = copy.deepcopy(block)
    kept: list[Tensor] = []
    for i in range(n - 1, 0, -1):
        conv, bn, nxt = (getattr(pruned, f"conv{i}"), getattr(pruned, f"bn{i}"), getattr(pruned, f"conv{i + 1}"))
        if conv.groups != 1 or nxt.groups != 1:
            raise ValueError(f"conv{i}: grouped convs cannot be pruned channel-wise")
        keep = kept_channels(bn, nxt, fraction, divisor)
        setattr(pruned, f"conv{i}", _slice_conv(conv, out_idx=keep))
        setattr(pruned, f"bn{i}", _slice_bn(bn, keep))
        setattr(pruned, f"conv{i + 1}", _slice_conv(nxt, in_idx=keep))
        kept.insert(0, keep)
    return pruned, kept
