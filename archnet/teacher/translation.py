"""Supervised Transformer teacher training on Multi30k (``train.module`` of archnet-teacher).

Loss: label-smoothed cross-entropy of the teacher-forced logits against the gold next
tokens, pads ignored (``torch.nn.functional.cross_entropy`` with ``label_smoothing`` 0.1:
``(1 - eps) * NLL + eps * mean_c(-log p_c)``). Adam(0.9, 0.98, eps 1e-9) from config, with a
per-step schedule: ``inverse_sqrt`` (linear warm-up to the configured lr over ``w`` steps,
then ``lr * sqrt(w / step)``; Vaswani et al. 2017) or ``cosine`` (warm-up, then a cosine
decay to 0 over the run). Each validation pass logs teacher-forced ``val/loss`` and
``val/acc`` and the BLEU of greedy decoding of the validation split (``val/bleu``), which
selects the checkpoint. The test metrics are sacreBLEU and paper-mode BLEU of beam search
(:mod:`archnet.metrics.translation`). The authors' code has no teacher training (reference
section 0): these settings are ours.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from archnet.errors import ConfigError
from archnet.metrics.translation import macs_per_token, score_split
from archnet.models.transformer import Transformer

SCHEDULES = ("inverse_sqrt", "cosine")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
    s = step + 1
    if schedule == "inverse_sqrt":
        return min(s / warmup, math.sqrt(warmup / s)) if warmup > 0 else 1.0 / math.sqrt(s)
    if s <= warmup:
        return s / warmup
    t = (s - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class TranslationTeacherModule(pl.LightningModule):
    """Teacher-forced Transformer training; checkpoints selected by greedy val BLEU.

    Args:
        model: the :class:`~archnet.models.transformer.Transformer` to train.
        dm: the set-up Multi30k data module (tokenizer, splits, references).
        optimizer: optimizer config node (``_target_``, lr, betas, ...): ``train.optimizer``.
        optimizer_override: used instead of ``optimizer`` when set (``train.optimizer`` of
            the primary configs is the image recipe's SGD, and Hydra merges a recipe's
            optimizer node into it key by key instead of replacing it).
        total_steps, warmup_steps: run length and warm-up in optimizer steps.
        label_smoothing: epsilon of the smoothed CE (0.1).
        schedule: ``inverse_sqrt`` or ``cosine``.
        val_max_len, val_limit: greedy decoding length cap and sentence cap for ``val/bleu``.
        beam, max_len, alpha, splits, limit: test-time beam search and the scored splits
            (the first one is reported as ``test/*``).
    """

    monitor = "val/bleu"

    def __init__(self, model: Transformer, dm: Any, optimizer: dict, total_steps: int,
                 warmup_steps: int = 0, label_smoothing: float = 0.1, schedule: str = "inverse_sqrt",
                 val_max_len: int = 100, val_limit: int | None = None, beam: int = 5,
                 max_len: int = 100, alpha: float = 0.7,
                 splits: Sequence[str] = ("test_2016_flickr",), limit: int | None = None,
                 max_tokens: int = 4096, optimizer_override: dict | None = None) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError("train.module.schedule", schedule, SCHEDULES)
        if dm.vocab_size > model.cfg.vocab_size:
            raise ConfigError("data.vocab_size", model.cfg.vocab_size,
                              f">= the tokenizer's vocabulary ({dm.vocab_size})")
        self.model, self.dm = model, dm
        self.pad_id = dm.pad_id
        self.optimizer_cfg = optimizer_override if optimizer_override else optimizer
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.label_smoothing, self.schedule = label_smoothing, schedule
        self.val_max_len, self.val_limit = val_max_len, val_limit
        self.decode = {"beam": beam, "max_len": max_len, "alpha": alpha, "max_tokens": max_tokens}
        self.splits, self.limit = list(splits), limit
        self._val: list[Tensor] = []

    def _loss_acc(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        src, tgt = batch[0], batch[1]
        logits = self.model(src, tgt[:, :-1])
        gold = tgt[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=self.label_smoothing)
        real = gold != self.pad_id
        acc = ((logits.argmax(-1) == gold) & real).sum() / real.sum().clamp_min(1)
        return loss, acc

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss_acc(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        loss, acc = self._loss_acc(batch)
        self.log("val/loss", loss, batch_size=batch[0].shape[0])
        self.log("val/acc", 100.0 * acc, batch_size=batch[0].shape[0])

    def on_validation_epoch_end(self) -> None:
        scores = score_split(self.model, self.dm, self.dm.val_split, beam=1, max_len=self.val_max_len,
                             limit=self.val_limit, max_tokens=self.decode["max_tokens"], device=self.device)
        self.log("val/bleu", scores["bleu"], prog_bar=True)

    def configure_optimizers(self) -> Any:
        opt = instantiate(self.optimizer_cfg, params=self.model.parameters(), _convert_="all")
        sched = LambdaLR(opt, lambda step: lr_factor(step, self.total_steps, self.warmup_steps, self.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # read by archnet.teacher.runner after training -----------------------------------------
    def test_metrics(self, dm: Any) -> dict[str, Any]:
        """Beam-search BLEU per split (``test/*`` for the first, ``<split>/*`` for the others)."""
        out: dict[str, Any] = {}
        for i, split in enumerate(self.splits):
            scores = score_split(self.model, dm, split, limit=self.limit, device="auto", **self.decode)
            out.update({f"{'test' if i == 0 else split}/{k}": v for k, v in scores.items()})
        return out

    def complexity(self, dm: Any) -> dict[str, int]:
        return {"params": sum(p.numel() for p in self.model.parameters()),
                "macs_per_token": macs_per_token(self.model)}

    @staticmethod
    def describe(test: dict[str, Any]) -> str:
        return f"test BLEU {test['test/bleu']:.2f} (paper mode {test['test/bleu_paper']:.2f})"
