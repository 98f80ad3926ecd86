"""``distill.average_samples``: an exponential moving average of the student's weights over the
last stage, kept after it if it agrees better with the teacher.

After every optimizer step of the last stage, :class:`WeightAverage` updates, for every
floating-point tensor ``w`` of the student's state (weights, BN affine parameters and running
statistics, quantizer steps), ``a <- d * a + (1 - d) * w`` with ``d = max(0, 1 - B / H)``:
``B`` the global batch, ``H = distill.average_samples`` (the step ``k`` updates back weighs
``(1 - d) d^k``, so about the last ``H`` samples count; ``a`` starts at the weights after the
first step). Integer tensors (BN batch counters) follow the live student. Adapters are not
averaged: they are not part of the deployed student. The average lives in the stage's
``last.ckpt`` (so a resumed stage continues it) and, once the stage is done, in its
``average.pt``.

:func:`settle_student` then decides what the run saves: the weights as trained and the average,
each after precise BN (:mod:`archnet.distill.precise_bn`, which keeps its statistics by its own
rule), are judged by top-1 agreement with the teacher on the whole held-out training slice;
``distill.average_keep=better`` (default) keeps the average only if it agrees strictly more,
``always`` keeps it regardless.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from archnet.distill.precise_bn import apply_precise_bn, heldout_agreement

KEEP = ("better", "always")
AVERAGE = "average.pt"


def average_decay(horizon_samples: int, global_batch: int) -> float:
    """``d = max(0, 1 - B / H)``: the per-step decay that averages about the last ``H`` samples."""
    if horizon_samples <= 0 or global_batch <= 0:
        raise ValueError(f"average_decay needs positive sizes, got H={horizon_samples}, B={global_batch}")
    return max(0.0, 1.0 - global_batch / horizon_samples)


class WeightAverage(pl.Callback):
    """The moving average ``a <- d a + (1 - d) w`` of ``pl_module.net.student``'s state, once per
    optimizer step (module docstring). ``average`` is ``None`` until the first step."""

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"WeightAverage decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average: dict[str, Tensor] | None = None
        self.updates = 0
        self.last_step = -1

    @staticmethod
    def _student(pl_module: pl.LightningModule) -> nn.Module:
        return pl_module.net.student

    @torch.no_grad()
    def update(self, state: dict[str, Tensor]) -> None:
        """One step of the average with the student's current ``state``."""
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
        else:
            for key, value in state.items():
                mean = self.average[key]
                if mean.is_floating_point():
                    mean.mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)
                else:
                    mean.copy_(value)
        self.updates += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.last_step:  # no optimizer step (accumulating gradients)
            return
        self.last_step = trainer.global_step
        self.update(self._student(pl_module).state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "average": self.average, "updates": self.updates,
                "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decay = state_dict["decay"]
        self.average = state_dict["average"]
        self.updates = state_dict["updates"]
        self.last_step = state_dict["last_step"]


def _agreement_after_precise_bn(cfg: DictConfig, student: nn.Module, teacher: nn.Module, dm: Any,
                                task: Any) -> tuple[float, dict[str, Any] | None]:
    """Precise BN as configured, then the held-out agreement of what it left."""
    precise = apply_precise_bn(cfg, student, teacher, dm, task)
    if precise is None:
        return heldout_agreement(student, teacher, task, dm.val_dataloader()), None
    key = "agreement_after" if precise["kept"] else "agreement_before"
    return precise[key], precise


def settle_student(cfg: DictConfig, student: nn.Module, teacher: nn.Module, dm: Any, task: Any,
                   average_file: Path | None) -> dict[str, Any]:
    """Leave in ``student`` what the run saves; returns the ``metrics.json`` entries
    ``precise_bn`` (of the kept weights) and ``weight_average``
    (``{samples, agreement_trained, agreement_average, kept, updates}``), each only when on."""
    average = None
    if int(cfg.distill.get("average_samples", 0)) > 0 and average_file is not None and average_file.exists():
        average = torch.load(average_file, map_location="cpu")
    if average is None:
        precise = apply_precise_bn(cfg, student, teacher, dm, task)
        return {"precise_bn": precise} if precise else {}
    agreement, precise = _agreement_after_precise_bn(cfg, student, teacher, dm, task)
    trained = {k: v.clone() for k, v in student.state_dict().items()}
    student.load_state_dict(average["state"])
    averaged_agreement, averaged_precise = _agreement_after_precise_bn(cfg, student, teacher, dm, task)
    kept = cfg.distill.get("average_keep", "better") == "always" or averaged_agreement > agreement
    if kept:
        precise = averaged_precise
    else:
        student.load_state_dict(trained)
    records: dict[str, Any] = {"weight_average": {
        "samples": int(cfg.distill.average_samples), "decay": average["decay"],
        "updates": average["updates"], "agreement_trained": agreement,
        "agreement_average": averaged_agreement, "kept": kept}}
    if precise is not None:
        records["precise_bn"] = precise
    return records
