"""Batch mixup for label-free distillation, and the per-stage augmentation hook.

Mixup (Zhang et al. 2018) as in the authors' ResNet-18/50 scripts (reference 3.2): with
probability ``p`` per batch,

    x' = lam * x + (1 - lam) * x[perm],   lam ~ Beta(alpha, alpha),

``perm`` a random permutation of the batch. Teacher and student both see ``x'`` (the hook
runs before either forward); there is no label to mix. Every draw comes from a NumPy
generator seeded by ``(seed, stage, global step)``, so a resumed run replays exactly the
decisions an uninterrupted one makes, and all DDP ranks agree on them.

:func:`build_augment` composes the data module's batched augmentation (random crop / flip,
if it has one) with mixup into the ``augment(x, global_step)`` hook of
:class:`~archnet.distill.stage_module.StageModule`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from archnet.errors import ConfigError

Augment = Callable[[Tensor, int], Tensor]
MIXUP_SALT = 0x6D6978  # separates mixup's stream from other users of (seed, stage, step)


def step_rng(seed: int, stage: int, step: int, salt: int = 0) -> np.random.Generator:
    """A NumPy generator that depends only on ``(seed, stage, step, salt)``."""
    return np.random.default_rng([int(salt), int(seed), int(stage), int(step)])


class BatchMixup:
    """``x -> lam * x + (1 - lam) * x[perm]`` with probability ``p`` (module docstring)."""

    def __init__(self, p: float = 0.1, alpha: float = 1.0, seed: int = 0, stage: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError("distill.mixup.p", p, "a probability in [0, 1]")
        if not alpha > 0:
            raise ConfigError("distill.mixup.alpha", alpha, "a number > 0")
        self.p, self.alpha, self.seed, self.stage = float(p), float(alpha), seed, stage

    def draw(self, batch: int, step: int) -> tuple[float, np.ndarray] | None:
        """``(lam, perm)`` when step ``step`` mixes, else None."""
        rng = step_rng(self.seed, self.stage, step, MIXUP_SALT)
        if rng.random() >= self.p:
            return None
        return float(rng.beta(self.alpha, self.alpha)), rng.permutation(batch)

    def __call__(self, x: Tensor, step: int) -> Tensor:
        mix = self.draw(x.shape[0], step)
        if mix is None:
            return x
        lam, perm = mix
        return lam * x + (1.0 - lam) * x[torch.from_numpy(perm).to(x.device)]

    def __repr__(self) -> str:
        return f"BatchMixup(p={self.p}, alpha={self.alpha}, seed={self.seed}, stage={self.stage})"


class Chain:
    """Apply augmentations ``f_1 .. f_n`` in order: ``f_n(... f_1(x, step) ..., step)``."""

    def __init__(self, steps: Sequence[Augment]) -> None:
        self.steps = list(steps)

    def __call__(self, x: Tensor, step: int) -> Tensor:
        for f in self.steps:
            x = f(x, step)
        return x

    def __repr__(self) -> str:
        return "Chain(" + ", ".join(map(repr, self.steps)) + ")"


def build_augment(cfg: Any, dm: Any, stage: int) -> Augment | None:
    """The ``augment`` hook of stage ``stage``: ``dm.batch_augment(stage)`` (when the data
    module has one) then mixup from ``distill.mixup`` (``{p, alpha}``; null or ``p: 0`` off).
    """
    steps: list[Augment] = []
    data_aug = getattr(dm, "batch_augment", None)
    if callable(data_aug):
        f = data_aug(stage)
        if f is not None:
            steps.append(f)
    node = cfg.distill.get("mixup") if cfg.get("distill") is not None else None
    if node and float(node.get("p", 0.0)) > 0.0:
        steps.append(BatchMixup(float(node.get("p")), float(node.get("alpha", 1.0)), int(cfg.seed), stage))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else Chain(steps)
