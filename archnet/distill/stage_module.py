"""The LightningModule of one distillation stage.

It owns the student and the training-only adapters (``net``); the frozen teacher is held
outside the module tree (not a submodule: never in DDP, never in checkpoints, never put in
train mode). Each step runs teacher and student only up to the deepest tap the stage
needs and minimises ``sum_j w_j * loss_j(adapter_j(s_j, t_j), t_j)``. Images only: no
label reaches this module.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from archnet.distill.losses import LOSSES
from archnet.distill.schedule import StageSpec
from archnet.models.taps import TappedChain


def adapter_key(tap: str) -> str:
    return tap.replace(".", "__")


class DistillNet(nn.Module):
    """Student plus per-tap training-only adapters ``adapter(s, t) -> s'``."""

    def __init__(self, student: TappedChain, adapters: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleDict({adapter_key(k): v for k, v in (adapters or {}).items()})

    def adapt(self, tap: str, s: Tensor, t: Tensor) -> Tensor:
        key = adapter_key(tap)
        return self.adapters[key](s, t) if key in self.adapters else s


class StageModule(pl.LightningModule):
    """One stage: ``StageSpec`` + ``DistillNet`` + frozen teacher + input preprocessing."""

    def __init__(self, net: DistillNet, teacher: TappedChain, stage: StageSpec,
                 preprocess: Callable[[Tensor], Tensor], global_batch: int,
                 tap_names: list[str], augment: Callable[[Tensor, int], Tensor] | None = None,
                 step_logger: Callable[[dict[str, float], int], None] | None = None,
                 log_every: int = 10) -> None:
        super().__init__()
        self.net = net
        self._frozen = [teacher]  # a list keeps it out of the module tree
        self.stage = stage
        self.preprocess = preprocess
        self.augment = augment
        self.global_batch = global_batch
        self.upto = max(tap_names.index(t) for t in stage.taps)
        self.step_logger = step_logger
        self.log_every = log_every

    @property
    def teacher(self) -> TappedChain:
        return self._frozen[0]

    def setup(self, stage: str) -> None:
        self.teacher.to(self.device).eval()

    def on_fit_start(self) -> None:
        self.teacher.to(self.device).eval()

    def stage_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            t_taps = self.teacher.forward_taps(x, self.upto)
        s_taps = self.net.student.forward_taps(x, self.upto)
        total = x.new_zeros(())
        parts: dict[str, Tensor] = {}
        for term in self.stage.terms:
            s, t = s_taps[term.tap], t_taps[term.tap]
            value = LOSSES[term.loss](self.net.adapt(term.tap, s, t), t)
            parts[f"{term.loss}/{term.tap}"] = value.detach()
            total = total + term.weight * value
        return total, parts

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        x = self.preprocess(batch)
        if self.augment is not None:
            x = self.augment(x, self.global_step)
        loss, parts = self.stage_loss(x)
        self.log("loss", loss, prog_bar=True, logger=False)
        if self.step_logger is not None and (self.global_step + 1) % self.log_every == 0:
            metrics = {f"{self.stage.name}/train/loss": float(loss)}
            metrics.update({f"{self.stage.name}/train/{k}": float(v) for k, v in parts.items()})
            metrics[f"{self.stage.name}/train/lr"] = self.optimizers().param_groups[0]["lr"]
            self.step_logger(metrics, self.global_step + 1)
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = instantiate(self.stage.optimizer, params=params, _convert_="all")
        if not self.stage.lr_scheduler:
            return opt
        sched = instantiate(self.stage.lr_scheduler, optimizer=opt, global_batch=self.global_batch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
