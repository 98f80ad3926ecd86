"""``distill.precise_bn_images``: population BN statistics for the student after the last stage.

While a stage trains, each BN's running statistics are an exponential average (momentum 0.1:
weight ``0.1 * 0.9^k`` on the batch ``k`` steps back, nine tenths of it on the last 22) of
batches that carry the flip/crop augmentation and, with probability ``p``, mixup; the student
is then reported in eval mode with them. After the last stage :func:`apply_precise_bn`
replaces them by the statistics of ``N`` label-free training images (the pool's seeded order, no augmentation), PyTorch's cumulative average over batches
``b`` (momentum ``None``): ``mean = (1/B) sum_b mean_b``, ``var = (1/B) sum_b var_b`` (unbiased
per batch). Everything but the BNs stays in eval mode, so no quantizer step moves.

``distill.precise_bn_keep=better`` (default) keeps the new statistics only when the student's
top-1 agreement with the teacher on the whole held-out training slice (never the reported
split; not only the ``distill.val_samples`` images a stage is scored on) rises; ``always``
keeps them.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from archnet.ops.batchnorm import batchnorms as all_batchnorms
from archnet.ops.batchnorm import recalibrate

KEEP = ("better", "always")
BATCH = 256  # images per forward while collecting statistics


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in all_batchnorms(model) if m.track_running_stats]


def _statistics(bn: _BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    return bn.running_mean, bn.running_var, bn.num_batches_tracked


def population_statistics(model: nn.Module, batches: Iterable[tuple[Tensor, ...]]) -> int:
    """Set every BN's running statistics in ``model`` to the cumulative average over
    ``batches`` (module docstring; :func:`archnet.ops.batchnorm.recalibrate` with only the BNs
    in training mode); returns the number of images seen. ``model`` ends in eval mode."""
    seen, device = 0, _device(model)

    def forward(inputs: tuple[Tensor, ...]) -> None:
        nonlocal seen
        model(*(x.to(device) for x in inputs))
        seen += len(inputs[0])

    recalibrate(model, forward, batches, only_bn=True)
    model.eval()
    if batchnorms(model) and not seen:
        raise ValueError("population_statistics needs at least one batch")
    return seen


@torch.no_grad()
def heldout_agreement(student: nn.Module, teacher: nn.Module, task: Any, loader: Iterable,
                      max_samples: float = float("inf")) -> float:
    """Top-1 agreement (%) of ``student`` with ``teacher``, eval mode, on the first
    ``max_samples`` samples of ``loader`` (all by default; labels dropped unread)."""
    student.eval()
    teacher.eval()
    same = counted = seen = 0.0
    for batch in loader:
        inputs = task.eval_inputs(batch)
        n = task.batch_size(inputs)
        if seen + n > max_samples:  # cut the last batch to fit
            keep = int(max_samples - seen)
            inputs = tuple(x[:keep] for x in inputs)
            n = keep
        s_out = student(*(x.to(_device(student)) for x in inputs)).cpu()
        t_out = teacher(*(x.to(_device(teacher)) for x in inputs)).cpu()
        s, c = task.agreement(s_out, t_out, inputs)
        same, counted, seen = same + s, counted + c, seen + n
        if seen >= max_samples:
            break
    return 100.0 * same / max(counted, 1)


def apply_precise_bn(cfg: DictConfig, student: nn.Module, teacher: nn.Module, dm: Any,
                     task: Any) -> dict[str, Any] | None:
    """Population statistics on ``distill.precise_bn_images`` images, kept as
    ``distill.precise_bn_keep`` says. Returns ``{"images", "agreement_before",
    "agreement_after", "kept"}``, or ``None`` when off (0) or the student has no BN."""
    from archnet.distill.build import seeded_batches

    n = int(cfg.distill.get("precise_bn_images", 0))
    keep = cfg.distill.get("precise_bn_keep", "better")
    bns = batchnorms(student)
    if n <= 0 or not bns:
        return None
    saved = [[buf.clone() for buf in _statistics(bn)] for bn in bns]
    before = heldout_agreement(student, teacher, task, dm.val_dataloader())
    seen = population_statistics(student, seeded_batches(cfg, dm, task, n, BATCH))
    after = heldout_agreement(student, teacher, task, dm.val_dataloader())
    kept = keep == "always" or after > before
    if not kept:
        with torch.no_grad():
            for bn, old in zip(bns, saved):
                for buf, value in zip(_statistics(bn), old):
                    buf.copy_(value)
    return {"images": seen, "agreement_before": before, "agreement_after": after, "kept": kept}
