"""Hook-based parameter and MAC counts.

MACs of a conv: ``C_out * (C_in / groups) * k_h * k_w * H_out * W_out``; of a linear layer:
``in * out`` per row. BitOPs = MACs x weight bits x activation bits.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a single input of ``input_shape``."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out.shape[1] * (m.in_channels // m.groups) * k * out.shape[2] * out.shape[3]

    def linear_hook(m: nn.Linear, inp, _out) -> None:
        nonlocal total
        rows = inp[0].numel() // inp[0].shape[-1]
        total += rows * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bitops(macs: int, weight_bits: int, act_bits: int) -> int:
    """BitOPs = MACs x w_bits x a_bits."""
    return macs * weight_bits * act_bits
