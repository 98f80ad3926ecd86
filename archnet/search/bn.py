"""BatchNorm modes for a weight-sharing supernet.

* :func:`batch_stats` -- forward with the statistics of the current batch **without**
  touching the running statistics (train mode, momentum 0:
  ``running = (1 - 0) running + 0 batch``). Used for every auxiliary forward of the search
  (peer logits, board scores and caches, matcher inputs), so only the sampled path's own
  training step moves running statistics.
* :func:`~archnet.ops.batchnorm.recalibrate` -- reset every running statistic, then
  re-estimate them for one path as the plain average over ``batches`` (momentum ``None``),
  as slimmable/once-for-all networks do before evaluating a sub-network.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from archnet.ops.batchnorm import batchnorms, recalibrate

__all__ = ["batch_stats", "recalibrate"]


@contextmanager
def batch_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode BN on the current batch with frozen running statistics (restored after)."""
    was_training = model.training
    bns = batchnorms(model)
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
