"""Supervised teacher training: label-smoothed cross-entropy, the only step that uses labels."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy


class TeacherModule(pl.LightningModule):
    """``CE_ls(model(x), y)`` with an optimizer and a per-step cosine schedule from config."""

    def __init__(self, model: nn.Module, preprocess: Callable[[Tensor], Tensor], num_classes: int,
                 optimizer: dict, total_steps: int, label_smoothing: float = 0.1,
                 warmup_steps: int = 0, augment: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.preprocess, self.augment = preprocess, augment
        self.optimizer_cfg, self.total_steps = optimizer, total_steps
        self.label_smoothing, self.warmup_steps = label_smoothing, warmup_steps
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = self.preprocess(x)
        if self.augment is not None:
            x = self.augment(x)
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_top1.update(self.model(self.preprocess(x)), y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/top1", 100.0 * self.val_top1.compute(), prog_bar=True)
        self.val_top1.reset()

    def configure_optimizers(self) -> Any:
        import math

        from torch.optim.lr_scheduler import LambdaLR

        opt = instantiate(self.optimizer_cfg, params=self.model.parameters(), _convert_="all")

        def factor(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, factor), "interval": "step"}}
