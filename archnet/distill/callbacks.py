"""Lightning callbacks for stages (added by name under ``callbacks:``)."""
from __future__ import annotations

import lightning.pytorch as pl


class FailAtStep(pl.Callback):
    """Fault injection: raise ``RuntimeError`` after ``step`` optimizer steps of ``stage``.

    Used to test resume: ``+callbacks.fail._target_=archnet.distill.callbacks.FailAtStep
    +callbacks.fail.stage=01_logits +callbacks.fail.step=6``.
    """

    def __init__(self, stage: str, step: int) -> None:
        self.stage, self.step = stage, step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if getattr(pl_module, "stage", None) is not None and pl_module.stage.name == self.stage \
                and trainer.global_step >= self.step:
            raise RuntimeError(f"FailAtStep: stopped {self.stage} at step {trainer.global_step}")
