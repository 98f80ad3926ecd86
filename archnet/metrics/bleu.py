"""Corpus BLEU with sacreBLEU, in two variants, as plain functions and a torchmetrics Metric.

* ``sacrebleu`` (default): detokenised, cased output against the raw references with
  sacreBLEU's own tokenisation (``13a``); report :func:`bleu_signature` with the number.
* ``paper``: comparable to the authors' figures (reference sections 5, 10): both sides
  lower-cased, word-tokenised (spaCy rules), joined with spaces with " ," and " ."
  re-attached, then scored with ``tokenize='none'``.

BLEU = ``BP * exp(mean_n log p_n)``, ``p_n`` the clipped n-gram precisions (n = 1..4, ``exp``
smoothing), ``BP = min(1, exp(1 - ref_len / sys_len))``. The Metric accumulates the
sufficient statistics (matches and totals per order, system and reference lengths), which
add up over batches and ranks, so its result equals one ``corpus_bleu`` over all updates.
``scale=100`` gives sacreBLEU's 0-100 range, ``scale=1`` a fraction.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU as SacreBLEU
from sacrebleu.metrics.bleu import BLEUScore
from torch import Tensor
from torchmetrics import Metric

from archnet.data.tokenize import join_words, split_words

MODES = ("sacrebleu", "paper")
ORDER = 4


def paper_preprocess(texts: Sequence[str], lang: str, backend: str = "spacy") -> list[str]:
    """Lower-case, word-tokenise and join like the authors' ``gt_*.txt`` references."""
    return [join_words(t) for t in split_words(texts, lang, backend, lower=True)]


def _scorer(mode: str, lowercase: bool, tokenize: str | None) -> SacreBLEU:
    if mode == "paper":
        return SacreBLEU(tokenize="none", force=True)
    if mode == "sacrebleu":
        return SacreBLEU(lowercase=lowercase, tokenize=tokenize)
    raise ValueError(f"bleu mode {mode!r}: one of {', '.join(MODES)}")


def _prepare(hyps: Sequence[str], refs: Sequence[str], mode: str, lang: str | None
             ) -> tuple[list[str], list[str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if mode != "paper":
        return list(hyps), list(refs)
    if lang is None:
        raise ValueError("bleu mode 'paper' needs the target language (lang)")
    return paper_preprocess(hyps, lang), paper_preprocess(refs, lang)


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], mode: str = "sacrebleu",
                lang: str | None = None, lowercase: bool = False, tokenize: str | None = "13a"
                ) -> BLEUScore:
    """sacreBLEU ``BLEUScore`` (0-100) of ``hyps`` against one reference each."""
    h, r = _prepare(hyps, refs, mode, lang)
    return _scorer(mode, lowercase, tokenize).corpus_score(h, [r])


def bleu_signature(mode: str = "sacrebleu", lowercase: bool = False,
                   tokenize: str | None = "13a") -> str:
    """sacreBLEU's signature (``nrefs:1|case:...|tok:...|smooth:exp|version:...``)."""
    scorer = _scorer(mode, lowercase, tokenize)
    scorer.corpus_score(["x"], [["x"]])  # sacreBLEU fills the signature on first use
    return f"{scorer.get_signature()}|mode:{mode}"


class BLEUMetric(Metric):
    """torchmetrics interface: ``update(preds, refs)`` with lists of strings, ``compute()``
    -> BLEU as a 0-d float64 tensor in ``[0, scale]``."""

    full_state_update = False
    higher_is_better = True
    correct: Tensor
    total: Tensor
    sys_len: Tensor
    ref_len: Tensor

    def __init__(self, mode: str = "sacrebleu", lang: str | None = None, lowercase: bool = False,
                 tokenize: str | None = "13a", scale: float = 100.0, **kw) -> None:
        super().__init__(**kw)
        self.mode, self.lang, self.lowercase, self.tokenize, self.scale = (
            mode, lang, lowercase, tokenize, scale)
        self._bleu = _scorer(mode, lowercase, tokenize)
        zeros = torch.zeros(ORDER, dtype=torch.float64)
        self.add_state("correct", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("total", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("sys_len", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ref_len", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], refs: Sequence[str]) -> None:
        if not preds:
            return
        h, r = _prepare(preds, refs, self.mode, self.lang)
        s = self._bleu.corpus_score(h, [r])
        dev = self.correct.device
        self.correct += torch.tensor(s.counts, dtype=torch.float64, device=dev)
        self.total += torch.tensor(s.totals, dtype=torch.float64, device=dev)
        self.sys_len += s.sys_len
        self.ref_len += s.ref_len

    def compute(self) -> Tensor:
        score = SacreBLEU.compute_bleu(
            [int(c) for c in self.correct.tolist()], [int(t) for t in self.total.tolist()],
            int(self.sys_len), int(self.ref_len), smooth_method="exp").score
        return torch.tensor(score * self.scale / 100.0, dtype=torch.float64)

    def signature(self) -> str:
        return bleu_signature(self.mode, self.lowercase, self.tokenize)
