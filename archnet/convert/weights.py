"""Weight transfer from teacher layers into Arch-Net units."""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def load_conv_as_3x3(dst: nn.Conv2d, src: nn.Conv2d, fill: float = 0.0) -> None:
    """Copy ``src`` into the 3x3 ``dst``; a 1x1 kernel goes to the centre tap, the other
    eight taps get ``fill`` (0; the authors' code uses 1e-10)."""
    if src.weight.shape[:2] != dst.weight.shape[:2]:
        raise ValueError(f"conv shapes differ: {tuple(src.weight.shape)} -> {tuple(dst.weight.shape)}")
    k = src.kernel_size
    if k == (3, 3):
        dst.weight.copy_(src.weight)
    elif k == (1, 1):
        dst.weight.fill_(fill)
        dst.weight[:, :, 1, 1] = src.weight[:, :, 0, 0]
    else:
        raise ValueError(f"cannot place a {k} kernel into a 3x3 conv")
    if src.bias is not None and dst.bias is not None:
        dst.bias.copy_(src.bias)


@torch.no_grad()
def load_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    """Copy affine parameters and running statistics."""
    dst.load_state_dict(src.state_dict())


@torch.no_grad()
def init_merge_as_add(merge_units: nn.ModuleList, main_ch: int, short_ch: int) -> None:
    """Make each concat conv compute ``main + shortcut`` (identity on both halves, centre tap)."""
    for unit in merge_units:
        w = unit.conv.weight
        out_ch = w.shape[0]
        w.zero_()
        sm = main_ch // len(merge_units)
        idx = torch.arange(out_ch)
        w[idx, idx, 1, 1] = 1.0
        w[idx, sm + idx, 1, 1] = 1.0


@torch.no_grad()
def init_folded_merge(merge_units: nn.ModuleList, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make each concat unit compute ``bn(conv(h)) + s`` from ``concat[h, s]`` (eval mode, before
    its activation): weights ``[W gamma / sigma ; I]`` (``sigma = sqrt(var + eps)``; a 1x1 ``W``
    and the identity at the centre tap), BN the identity plus bias ``b - gamma mu / sigma``.
    Sliced units get the diagonal blocks of ``W``: slice ``i`` of the output reads slice ``i``
    of ``h`` only, as the authors' sliced merge does."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    folded = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    n = len(merge_units)
    so, si = conv.out_channels // n, conv.in_channels // n
    k = conv.kernel_size
    if k not in ((1, 1), (3, 3)):
        raise ValueError(f"cannot fold a {k} kernel into a 3x3 conv")
    for i, unit in enumerate(merge_units):
        part = folded[i * so:(i + 1) * so, i * si:(i + 1) * si]
        w = unit.conv.weight
        w.zero_()
        if k == (3, 3):
            w[:, :si] = part
        else:
            w[:, :si, 1, 1] = part[:, :, 0, 0]
        idx = torch.arange(so)
        w[idx, si + idx, 1, 1] = 1.0
        unit.bn.running_mean.zero_()
        unit.bn.running_var.fill_(1.0)
        unit.bn.weight.fill_(math.sqrt(1.0 + unit.bn.eps))
        unit.bn.bias.copy_(bias[i * so:(i + 1) * so])
