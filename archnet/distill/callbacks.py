"""Lightning callbacks for stages (added by name under ``callbacks:``)."""
from __future__ import annotations

import lightning.pytorch as pl
import torch


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


class ChannelsLast(pl.Callback):
    """Run the convolutions in NHWC (``torch.channels_last``): every 4-D parameter and buffer
    of the trained module, and of its frozen teacher when it has one, is converted at fit
    start. A convolution whose weight is channels-last returns channels-last outputs, so the
    layout follows the activations without touching the inputs. Values, ``state_dict`` keys
    and checkpoints are unchanged (layout only). ``callbacks=channels_last`` turns it on;
    measured speed-ups are in docs/results.md.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)
        teacher = getattr(pl_module, "teacher", None)
        if isinstance(teacher, torch.nn.Module):
            teacher.to(memory_format=torch.channels_last)
