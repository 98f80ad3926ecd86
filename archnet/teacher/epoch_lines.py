"""One printed line per finished epoch, for runs without a progress bar (logs, CI, nohup)."""
from __future__ import annotations

import time

import lightning.pytorch as pl


class EpochLines(pl.Callback):
    """After each epoch (and its validation): ``epoch e/E  train/loss ...  val/... (elapsed)``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
                   if k.startswith(("train/", "val/")) and v.numel() == 1}
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        minutes = (time.perf_counter() - self.start) / 60
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({minutes:.1f} min)",
              flush=True)
