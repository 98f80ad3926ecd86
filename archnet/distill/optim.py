"""Optimizers and LR schedules whose periods are counted in samples, not epochs."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LRScheduler


def cosine_warm_restarts(optimizer: Optimizer, global_batch: int, period_samples: int = 81920,
                         period_mult: int = 2, eta_min: float = 0.0) -> LRScheduler:
    """SGDR (Loshchilov & Hutter 2017) stepped per optimizer step:
    ``lr = eta_min + (lr0 - eta_min) * (1 + cos(pi * t_cur / T_i)) / 2``, ``T_0`` = one period
    of ``period_samples`` (paper: 10 x 8192 images), ``T_{i+1} = period_mult * T_i``."""
    steps = max(1, period_samples // global_batch)
    return CosineAnnealingWarmRestarts(optimizer, T_0=steps, T_mult=period_mult, eta_min=eta_min)
