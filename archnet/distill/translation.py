"""The Transformer (Multi30k) track of the distillation engine (reference sections 3.3, 5, 6).

* :class:`TranslationTask` -- the task interface of :mod:`archnet.distill.tasks` for
  ``(src, tgt)`` batches: inputs ``(src, tgt[:, :-1])`` for teacher and student alike; the
  stage loss is :func:`~archnet.convert.transformer_schedule.period_loss` (``mse``,
  ``cosine``, ``ce`` = label-smoothed CE against the teacher's argmax); agreement is the
  share of real target positions where the student's argmax token equals the teacher's;
  final metrics are sacreBLEU and paper-mode BLEU of beam-search output on the test splits.
  With ``targets="teacher"`` the training prefixes are the teacher's own translations
  (:mod:`archnet.distill.teacher_targets`): no human translation reaches distillation.
* :func:`transformer_student` and :func:`rfa_adapters` -- the ``student`` and
  ``distill.adapters`` factories (Arch-Net conversion, RFA on every sub-layer output).
* :func:`transformer_schedule` -- the paper's periods (derived from the layer counts) as
  stage specs with sample budgets.

Loss flags (reference 7.5; the authors' values in brackets): ``mask_pads`` True [False],
``cos_dim`` -1 [1], ``ce_mask`` gold [teacher_pred], ``ce_reduction`` mean [sum],
``smoothing`` 0.1 [0.1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from archnet.convert.transformer import (
    ResidualFeatureAdaptation,
    convert_transformer,
    rfa_taps,
)
from archnet.convert.transformer_schedule import LOSS_KINDS, Period, period_loss, transformer_periods
from archnet.data.multi30k import PadCollate
from archnet.distill.report import ReportSpec
from archnet.distill.schedule import LossTerm, StageSpec, check_budgets, finalize
from archnet.errors import ConfigError
from archnet.metrics.translation import macs_per_token, resolve_device, score_split
from archnet.models.transformer import Transformer
from archnet.ops.quant import QuantConfig

Adapt = Callable[[str, Tensor, Tensor], Tensor]
TARGETS = ("gold", "teacher")
REPORT = ReportSpec(columns=(("BLEU", "test/bleu", 1.0, ".2f"), ("BLEU (paper)", "test/bleu_paper", 1.0, ".2f"),
                             ("params (M)", "params", 1e-6, ".3f"),
                             ("MACs/token (M)", "macs_per_token", 1e-6, ".2f")),
                    bars=("bleu", "bleu_paper"), ylabel="BLEU", title="test BLEU", unit="sentences")


# -- student and adapters ------------------------------------------------------------------
def transformer_student(teacher: Transformer, quant: QuantConfig | None = None,
                        input_shape: Any = None, **flags: Any) -> Transformer:
    """``student`` factory: :func:`~archnet.convert.transformer.convert_transformer` with
    ``flags`` (``bn_include_pad``, ``init_from_teacher``, ``init_embedding_from_teacher``,
    ``keep_other_dropout``); ``input_shape`` is unused (token ids)."""
    return convert_transformer(teacher, quant, **flags)


class TapRFA(nn.Module):
    """``F = L3(L2(L1(s))) + s`` (reference 2.2) with the adapter signature ``(s, t)``;
    the teacher tensor is not used (no teacher attention in the Transformer)."""

    def __init__(self, d_model: int, squeeze: int = 16, residual: bool = True) -> None:
        super().__init__()
        self.rfa = ResidualFeatureAdaptation(d_model, squeeze, residual)

    def forward(self, s: Tensor, t: Tensor | None = None) -> Tensor:
        return self.rfa(s)


def rfa_adapters(teacher: Transformer, student: Transformer, input_shape: Any = None,
                 squeeze: int = 16, residual: bool = True,
                 taps: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """``distill.adapters`` factory: one RFA per input stage and MHA/FFN output (default)."""
    chosen = rfa_taps(teacher.tap_names) if taps is None else list(taps)
    for t in chosen:
        if t not in teacher.tap_names:
            raise ConfigError("distill.adapters.taps", t, teacher.tap_names)
    return {t: TapRFA(teacher.cfg.d_model, squeeze, residual) for t in chosen}


# -- schedule ------------------------------------------------------------------------------
def _layer_count(tap_names: Sequence[str], side: str) -> int:
    return len({t.split(".")[1] for t in tap_names if t.startswith(f"{side}.") and t.split(".")[1].isdigit()})


def transformer_schedule(tap_names: list[str], samples_per_period: int, final_samples: int,
                         n_enc: int | None = None, n_dec: int | None = None, scale: float = 1.0,
                         optimizer: dict | None = None, lr_scheduler: dict | None = None,
                         final_lr_scheduler: dict | None = None, decay: float = 0.8,
                         ce_weight: float = 1.0, stage_overrides: dict | None = None) -> list[StageSpec]:
    """The paper's progressive Transformer schedule (reference 3.3) as stage specs.

    ``2 + n_enc + n_dec`` periods of ``samples_per_period`` each (MSE on sub-layer outputs,
    cosine on embeddings and attention maps, newest weight 1, older ``decay^k``), then a
    final period of ``final_samples`` adding ``ce_weight * CE(logits, teacher argmax)``.
    ``n_enc``/``n_dec`` default to the layer counts in ``tap_names``. Middle periods use
    ``lr_scheduler`` (paper: none), the final one ``final_lr_scheduler`` (paper: warm
    restarts, T_0 = 10 epochs, x2, eta_min 1e-4). Budgets are global sentence pairs.
    """
    n_enc = _layer_count(tap_names, "enc") if n_enc is None else n_enc
    n_dec = _layer_count(tap_names, "dec") if n_dec is None else n_dec
    check_budgets({"samples_per_period": samples_per_period, "final_samples": final_samples},
                  scale, decay)
    periods = transformer_periods(n_enc, n_dec, decay, ce_weight)
    stages = []
    for i, p in enumerate(periods):
        last = i == len(periods) - 1
        sched = final_lr_scheduler if last else lr_scheduler
        stages.append(StageSpec(p.name, [LossTerm(tap, kind, w) for tap, kind, w in p.as_terms()],
                                max(1, int((final_samples if last else samples_per_period) * scale)),
                                dict(optimizer or {}), dict(sched) if sched else None))
    return finalize(stages, tap_names, stage_overrides, losses=LOSS_KINDS)


# -- the task ------------------------------------------------------------------------------
class _TapAdapt:
    """``period_loss``'s adapter interface (``adapt(tap, s)``) over ``DistillNet.adapt``."""

    def __init__(self, adapt: Adapt, teacher_taps: dict[str, Tensor]) -> None:
        self._adapt, self._t = adapt, teacher_taps

    def adapt(self, tap: str, s: Tensor) -> Tensor:
        return self._adapt(tap, s, self._t[tap])


class TranslationTask:
    """Multi30k ``(src, tgt)`` batches for the distillation engine (module docstring).

    Args:
        dm: a set-up :class:`~archnet.data.multi30k.Multi30kDataModule`.
        targets: ``gold`` (human translations as teacher-forcing prefixes) or ``teacher``
            (the teacher's beam-search translations of the training sources, cached).
        vocab_size: the model vocabulary (``data.vocab_size``); must be >= the tokenizer's.
        teacher_model, teacher_checkpoint: the teacher (config node, path) for ``teacher``.
        cache_dir: where teacher translations are cached.
        mask_pads, cos_dim, smoothing, ce_reduction, ce_mask: loss flags (``period_loss``).
        beam, max_len, alpha: decoding for BLEU and teacher targets (paper 5, 100, 0.7).
        splits: test splits scored at the end; the first is the reported ``test/*``.
        limit: score only the first ``limit`` sentences of each split (smoke runs).
        max_tokens: padded source tokens per decoding batch.
        device: decoding device (``auto``: CUDA when available; null: the model's).
    """

    primary_metric = ("test/bleu", "BLEU")
    report_spec = REPORT

    def __init__(self, dm: Any, targets: str = "gold", vocab_size: int | None = None,
                 teacher_model: Any = None, teacher_checkpoint: str | None = None,
                 cache_dir: str | None = None, mask_pads: bool = True, cos_dim: int = -1,
                 smoothing: float = 0.1, ce_reduction: str = "mean", ce_mask: str = "gold",
                 beam: int = 5, max_len: int = 100, alpha: float = 0.7,
                 splits: Sequence[str] = ("test_2016_flickr",), limit: int | None = None,
                 max_tokens: int = 4096, device: str | None = "auto") -> None:
        if targets not in TARGETS:
            raise ConfigError("data.targets", targets, TARGETS)
        if vocab_size is not None and dm.vocab_size > vocab_size:
            raise ConfigError("data.vocab_size", vocab_size,
                              f">= the tokenizer's vocabulary ({dm.vocab_size})")
        for key, value, allowed in (("ce_reduction", ce_reduction, ("mean", "sum")),
                                    ("ce_mask", ce_mask, ("gold", "teacher_pred")),
                                    ("cos_dim", cos_dim, (-1, 1))):
            if value not in allowed:
                raise ConfigError(f"data.task.{key}", value, allowed)
        self.targets = targets
        self.teacher_model, self.teacher_checkpoint, self.cache_dir = teacher_model, teacher_checkpoint, cache_dir
        self.pad_id, self.eos_id = dm.pad_id, dm.tokenizer.eos_id
        self.collate_fn = PadCollate(self.pad_id)
        self.flags = {"mask_pads": mask_pads, "cos_dim": cos_dim, "smoothing": smoothing,
                      "ce_reduction": ce_reduction, "ce_mask": ce_mask}
        self.decode = {"beam": beam, "max_len": max_len, "alpha": alpha, "max_tokens": max_tokens}
        self.splits, self.limit, self.device = list(splits), limit, device
        self._train: Any = None

    # data ----------------------------------------------------------------------------------
    def train_dataset(self, dm: Any) -> Any:
        """The distillation pool: gold pairs, or sources with the teacher's translations."""
        if self.targets == "gold":
            return dm.train_set
        if self._train is None:
            from archnet.distill.teacher_targets import teacher_targets

            if not self.cache_dir:
                raise ConfigError("data.task.cache_dir", self.cache_dir, "a folder for teacher translations")
            self._train = teacher_targets(dm, self.teacher_model, self.teacher_checkpoint, self.cache_dir,
                                          device=self.device, **self.decode)
        return self._train

    def train_inputs(self, batch: Sequence[Tensor], step: int) -> tuple[Tensor, Tensor]:
        return self.eval_inputs(batch)

    def eval_inputs(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        src, tgt = batch[0], batch[1]
        return src, tgt[:, :-1]

    def batch_size(self, inputs: Sequence[Tensor]) -> int:
        return inputs[0].shape[0]

    def _out_valid(self, tgt_in: Tensor) -> Tensor:
        """Positions whose next gold token is real: not pad, and not the final EOS input."""
        return (tgt_in != self.pad_id) & (tgt_in != self.eos_id)

    # loss and agreement --------------------------------------------------------------------
    def loss(self, terms: Sequence[LossTerm], s_taps: dict[str, Tensor], t_taps: dict[str, Tensor],
             inputs: Sequence[Tensor], adapt: Adapt) -> tuple[Tensor, dict[str, Tensor]]:
        """``sum_j w_j * loss_j(adapt_j(s_j), t_j)`` with the token-level losses."""
        src, tgt_in = inputs[0], inputs[1]
        period = Period("stage", {t.tap: (t.loss, t.weight) for t in terms})
        tgt_out = tgt_in.masked_fill(~self._out_valid(tgt_in), self.pad_id)  # only its pad mask is read
        total, parts = period_loss(period, s_taps, t_taps, src, tgt_in, self.pad_id,
                                   adapters=_TapAdapt(adapt, t_taps),  # type: ignore[arg-type]
                                   tgt_out=tgt_out, **self.flags)
        kinds = {t.tap: t.loss for t in terms}
        return total, {f"{kinds[tap]}/{tap}": v.detach() for tap, v in parts.items()}

    @torch.no_grad()
    def agreement(self, student_logits: Tensor, teacher_logits: Tensor,
                  inputs: Sequence[Tensor]) -> tuple[float, int]:
        """(real target positions where the argmax tokens agree, real target positions)."""
        valid = self._out_valid(inputs[1])
        same = (student_logits.argmax(-1) == teacher_logits.argmax(-1)) & valid
        return float(same.sum()), int(valid.sum())

    # final evaluation ----------------------------------------------------------------------
    def final_metrics(self, model: nn.Module, dm: Any) -> dict[str, Any]:
        """BLEU of beam-search output per split: ``test/*`` for the first split (test2016),
        ``<split>/*`` for the others; each with its sacreBLEU signature."""
        out: dict[str, Any] = {}
        for i, split in enumerate(self.splits):
            scores = score_split(model, dm, split, limit=self.limit,
                                 device=resolve_device(self.device, model), **self.decode)
            prefix = "test" if i == 0 else split
            out.update({f"{prefix}/{k}": v for k, v in scores.items()})
        return out

    def complexity(self, model: nn.Module, dm: Any) -> dict[str, int]:
        """Parameters and linear MACs per (source + target) token (:func:`macs_per_token`)."""
        from archnet.metrics.complexity import count_params

        return {"params": count_params(model), "macs_per_token": macs_per_token(model)}


def translation_task(dm: Any, **kw: Any) -> TranslationTask:
    """``data.task`` factory (``_recursive_: false`` keeps ``teacher_model`` a config node)."""
    return TranslationTask(dm, **kw)
