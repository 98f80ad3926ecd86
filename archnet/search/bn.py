"""BatchNorm modes for a weight-sharing supernet.

* :func:`batch_stats` -- forward with the statistics of the current batch **without**
  touching the running statistics (train mode, momentum 0:
  ``running = (1 - 0) running + 0 batch``). Used for every auxiliary forward of the search
  (peer logits, board scores and caches, matcher inputs), so only the sampled path's own
  training step moves running statistics.
* :func:`recalibrate` -- reset every running statistic, then re-estimate them for one path
  as the plain average over ``batches`` (momentum ``None``), as slimmable/once-for-all
  networks do before evaluating a sub-network.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def _bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def batch_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode BN on the current batch with frozen running statistics (restored after)."""
    was_training = model.training
    bns = _bns(model)
    saved = [bn.momentum for bn in bns]
    model.train()
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield model
    finally:
        for bn, mom in zip(bns, saved):
            bn.momentum = mom
        model.train(was_training)


@torch.no_grad()
def recalibrate(model: nn.Module, forward: Callable[[Tensor], object], batches: Iterable[Tensor]) -> None:
    """Reset all BN running statistics and re-estimate them with ``forward`` over ``batches``."""
    was_training = model.training
    bns = _bns(model)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        for x in batches:
            forward(x)
    finally:
        for bn, mom in zip(bns, saved):
            bn.momentum = mom
        model.train(was_training)
