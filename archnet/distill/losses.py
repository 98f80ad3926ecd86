"""Distillation losses between a student tensor ``s`` and the teacher tensor ``t``.

* ``mse``: mean over all elements of ``(s - t)^2`` (Arch-Net feature loss).
* ``cosine``: ``1 - mean_b cos(s_b, t_b)`` over the flattened non-batch axes (Arch-Net's
  final logit loss).
* ``kl``: ``tau^2 * mean_b KL(softmax(t/tau) || softmax(s/tau))`` (Hinton KD).
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor


def mse(s: Tensor, t: Tensor) -> Tensor:
    return F.mse_loss(s, t)


def cosine(s: Tensor, t: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1).mean()


def kl(s: Tensor, t: Tensor, tau: float = 1.0) -> Tensor:
    log_p_s = F.log_softmax(s.flatten(1) / tau, dim=1)
    log_p_t = F.log_softmax(t.flatten(1) / tau, dim=1)
    return tau * tau * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mse, "cosine": cosine, "kl": kl}
