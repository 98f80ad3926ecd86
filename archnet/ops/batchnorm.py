"""Re-estimating BatchNorm running statistics as a plain average over batches."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm of ``model`` (any dimension), in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate(model: nn.Module, forward: Callable[[Any], object], batches: Iterable[Any],
                only_bn: bool = False) -> None:
    """Reset every BN's running statistics in ``model``, then re-estimate them with
    ``forward(x)`` for each ``x`` in ``batches`` as the cumulative average (momentum ``None``:
    ``mean = (1/B) sum_b mean_b``, ``var = (1/B) sum_b var_b``, unbiased per batch). The
    forwards run with ``model`` in training mode, or with ``only_bn`` with only its BNs in
    training mode (no other module sees a training forward: no quantizer initialises a step).
    Momenta and the model's mode are restored after."""
    was_training = model.training
    bns = batchnorms(model)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train(not only_bn)
    for bn in bns:
        bn.train()
    try:
        for x in batches:
            forward(x)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
        model.train(was_training)
