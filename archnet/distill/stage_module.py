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

from archnet.distill.schedule import StageSpec
from archnet.distill.tasks import ImageTask
from archnet.models.taps import TappedChain
from archnet.ops.lsq import LsqQuantizer


def adapter_key(tap: str) -> str:
    return tap.replace(".", "__")


class DistillNet(nn.Module):
    """Student plus per-tap training-only adapters ``adapter(s, t) -> s'``."""

    def __init__(self, student: TappedChain, adapters: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.student = student
        self.set_adapters(adapters)

    def set_adapters(self, adapters: dict[str, nn.Module] | None) -> None:
        """Replace every adapter (keyed by tap name)."""
        self.adapters = nn.ModuleDict({adapter_key(k): v for k, v in (adapters or {}).items()})

    def adapt(self, tap: str, s: Tensor, t: Tensor) -> Tensor:
        key = adapter_key(tap)
        return self.adapters[key](s, t) if key in self.adapters else s


class StageModule(pl.LightningModule):
    """One stage: ``StageSpec`` + ``DistillNet`` + frozen teacher + input preprocessing."""

    def __init__(self, net: DistillNet, teacher: TappedChain, stage: StageSpec,
                 preprocess: Callable[[Tensor], Tensor] | None, global_batch: int,
                 tap_names: list[str], augment: Callable[[Tensor, int], Tensor] | None = None,
                 step_logger: Callable[[dict[str, float], int], None] | None = None,
                 log_every: int = 10, task: Any = None) -> None:
        super().__init__()
        self.net = net
        self._frozen = [teacher]  # a list keeps it out of the module tree
        self.stage = stage
        self.task = task if task is not None else ImageTask(preprocess, augment)  # type: ignore[arg-type]
        self.global_batch = global_batch
        # taps pair by name: each network stops after its own deepest supervised tap
        self.teacher_upto = max(teacher.tap_names.index(t) for t in stage.taps)
        self.student_upto = max(net.student.tap_names.index(t) for t in stage.taps)
        self.step_logger = step_logger
        self.log_every = log_every

    @property
    def teacher(self) -> TappedChain:
        return self._frozen[0]

    def setup(self, stage: str) -> None:
        self.teacher.to(self.device).eval()

    def on_fit_start(self) -> None:
        self.teacher.to(self.device).eval()

    def stage_loss(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher (no grad) and student up to the deepest tap, then the task's loss."""
        with torch.no_grad():
            t_taps = self.teacher.forward_taps(*inputs, upto=self.teacher_upto)
        s_taps = self.net.student.forward_taps(*inputs, upto=self.student_upto)
        return self.task.loss(self.stage.terms, s_taps, t_taps, inputs, self.net.adapt)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, parts = self.stage_loss(self.task.train_inputs(batch, self.global_step))
        self.log("loss", loss, prog_bar=True, logger=False)
        if self.step_logger is not None and (self.global_step + 1) % self.log_every == 0:
            metrics = {f"{self.stage.name}/train/loss": float(loss.detach())}
            metrics.update({f"{self.stage.name}/train/{k}": float(v) for k, v in parts.items()})
            metrics[f"{self.stage.name}/train/lr"] = self.optimizers().param_groups[0]["lr"]
            self.step_logger(metrics, self.global_step + 1)
        return loss

    def configure_optimizers(self) -> Any:
        """The stage's optimizer; LSQ steps in a second group at ``step_lr_scale`` times the
        learning rate (left out when 0, one group when 1)."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        scale = self.stage.step_lr_scale
        steps = {id(m.alpha) for m in self.net.modules() if isinstance(m, LsqQuantizer)} if scale != 1 else set()
        opt = instantiate(self.stage.optimizer, params=[p for p in params if id(p) not in steps],
                          _convert_="all")
        step_params = [p for p in params if id(p) in steps]
        if step_params and scale > 0:
            opt.add_param_group({"params": step_params, "lr": opt.defaults["lr"] * scale})
        if not self.stage.lr_scheduler:
            return opt
        sched = instantiate(self.stage.lr_scheduler, optimizer=opt, global_batch=self.global_batch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
