"""Batched beam search and greedy decoding with cached incremental decoding.

Works for any model with the decode interface of
:class:`~archnet.models.transformer.Transformer` (teacher and student alike):
``encode(src) -> (memory, src_mask)``, ``init_cache(memory, src_mask) -> cache`` (with
``cache.reorder(index)``), ``decode_step(tokens, cache) -> logits`` (B x V), and, for
``use_cache=False``, ``decode_full(prefix, memory, src_mask) -> logits`` (B x T x V).

A hypothesis ``y_1..y_n`` (``y_n`` = EOS, ``n <= max_len``) scores
``S = sum_i log p(y_i | y_<i, x)``; finished hypotheses are ranked by ``S / n^alpha``
(:func:`length_normalized`; alpha 0.7 as in the authors' decoder, ``n`` counts the EOS).
Each step expands every live beam, keeps the ``2 * beam`` best candidates: those ending in
EOS become finished hypotheses, the best ``beam`` others stay live. A sentence stops after
``beam`` finished hypotheses or at ``max_len`` (where only EOS is allowed). Pad and BOS are
never generated (nor ``banned_ids``).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

NEG = float("-inf")


class Seq2Seq(Protocol):
    """The decode interface (see the module docstring)."""

    training: bool

    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]: ...
    def init_cache(self, memory: Tensor, src_mask: Tensor) -> Any: ...
    def decode_step(self, tokens: Tensor, cache: Any) -> Tensor: ...
    def decode_full(self, prefix: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor: ...


def length_normalized(score: Tensor | float, length: Tensor | int, alpha: float = 0.7) -> Any:
    """``score / length^alpha``."""
    return score / (length ** alpha if isinstance(length, int) else length.to(torch.float) ** alpha)


@contextmanager
def _eval(model: Seq2Seq) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


class _Stepper:
    """Next-token log-probabilities with or without the K/V cache."""

    def __init__(self, model: Seq2Seq, memory: Tensor, src_mask: Tensor, use_cache: bool) -> None:
        self.model, self.memory, self.src_mask, self.use_cache = model, memory, src_mask, use_cache
        self.cache = model.init_cache(memory, src_mask) if use_cache else None

    def __call__(self, prefix: Tensor) -> Tensor:
        if self.cache is not None:
            logits = self.model.decode_step(prefix[:, -1], self.cache)
        else:
            logits = self.model.decode_full(prefix, self.memory, self.src_mask)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def reorder(self, index: Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)
        else:
            self.memory = self.memory.index_select(0, index)
            self.src_mask = self.src_mask.index_select(0, index)


def _next_logp(step: _Stepper, prefix: Tensor, banned_ids: tuple[int | None, ...], eos: int,
               last: bool) -> Tensor:
    """Log-probabilities with banned ids at -inf, and only EOS allowed when ``last``.

    Writes only the banned columns (in place: ``step`` returns a fresh tensor), not a
    full-vocabulary mask per step."""
    logp = step(prefix)
    if last:
        only_eos = torch.full_like(logp, NEG)
        only_eos[:, eos] = logp[:, eos]
        return only_eos
    ids = [i for i in banned_ids if i is not None]
    if ids:
        logp[:, ids] = NEG
    return logp


def _strip(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos)] if eos in row else row


def greedy_decode(model: Seq2Seq, src: Tensor, bos: int, eos: int, max_len: int = 100,
                  pad: int | None = None, use_cache: bool = True) -> list[list[int]]:
    """Argmax decoding; token lists without BOS/EOS, one per source row.

    Rows that emitted EOS leave the batch (the model runs only on unfinished rows)."""
    with _eval(model):
        memory, src_mask = model.encode(src)
        step = _Stepper(model, memory, src_mask, use_cache)
        b, dev = src.shape[0], src.device
        out = torch.full((b, max_len), eos, dtype=torch.long, device=dev)
        live = torch.arange(b, device=dev)               # original rows still decoding
        prefix = torch.full((b, 1), bos, dtype=torch.long, device=dev)
        for t in range(1, max_len + 1):
            nxt = _next_logp(step, prefix, (pad, bos), eos, t == max_len).argmax(-1)
            out[live, t - 1] = nxt
            going = nxt != eos
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep = going.nonzero()[:, 0]
                step.reorder(keep)
                live, prefix, nxt = live[keep], prefix[keep], nxt[keep]
            prefix = torch.cat([prefix, nxt[:, None]], 1)
    return [_strip(row, eos) for row in out.tolist()]


def beam_search(model: Seq2Seq, src: Tensor, bos: int, eos: int, beam: int = 5,
                max_len: int = 100, alpha: float = 0.7, pad: int | None = None,
                banned_ids: Sequence[int] = (), use_cache: bool = True) -> list[list[int]]:
    """Best hypothesis per source row (module docstring), as token lists without BOS/EOS.

    ``banned_ids`` are never generated, besides ``pad`` and ``bos`` (e.g. ``<unk>``).
    A sentence with ``beam`` finished hypotheses leaves the batch: the model runs only on
    the beams of unfinished sentences (same result, less work on ragged batches).
    """
    with _eval(model):
        b, k, dev = src.shape[0], beam, src.device
        memory, src_mask = model.encode(src)
        rows = torch.arange(b, device=dev).repeat_interleave(k)
        step = _Stepper(model, memory.index_select(0, rows), src_mask.index_select(0, rows), use_cache)
        banned = (pad, bos, *banned_ids)
        live = torch.arange(b, device=dev)               # original sentences still searching
        prefix = torch.full((b * k, 1), bos, dtype=torch.long, device=dev)
        scores = torch.full((b, k), NEG, device=dev)     # live sentences x beams
        scores[:, 0] = 0.0
        best = torch.full((b,), NEG, device=dev)
        best_seq = torch.full((b, max_len), eos, dtype=torch.long, device=dev)
        n_done = torch.zeros(b, dtype=torch.long, device=dev)
        for t in range(1, max_len + 1):
            m = live.shape[0]
            logp = _next_logp(step, prefix, banned, eos, t == max_len)
            v = logp.shape[-1]
            cand = (scores[:, :, None] + logp.view(m, k, v)).view(m, k * v)
            top, idx = cand.topk(min(2 * k, k * v), dim=1)
            src_beam, tok = idx // v, idx % v
            is_eos = (tok == eos) & torch.isfinite(top)
            # finished hypotheses: best normalised one per sentence, and how many so far
            norm = length_normalized(top, t, alpha).masked_fill(~is_eos, NEG)
            nbest, arg = norm.max(1)
            better = nbest > best[live]
            if bool(better.any()):
                origin = torch.arange(m, device=dev) * k + src_beam.gather(1, arg[:, None])[:, 0]
                hit = better.nonzero()[:, 0]
                best[live[hit]] = nbest[hit]
                seq = torch.full((hit.shape[0], max_len), eos, dtype=torch.long, device=dev)
                seq[:, : t - 1] = prefix.index_select(0, origin[hit])[:, 1:]
                best_seq[live[hit]] = seq
            n_done[live] += is_eos.sum(1)
            open_ = n_done[live] < k
            if t == max_len or not bool(open_.any()):
                break
            # live beams: the best k non-EOS candidates of each open sentence, in rank order
            keep = open_.nonzero()[:, 0]
            live_scores, pos = top[keep].masked_fill(is_eos[keep], NEG).topk(k, dim=1)
            origin = (keep[:, None] * k + src_beam[keep].gather(1, pos)).view(-1)
            step.reorder(origin)
            prefix = torch.cat([prefix.index_select(0, origin), tok[keep].gather(1, pos).view(-1, 1)], 1)
            scores, live = live_scores, live[keep]
    return [_strip(row, eos) for row in best_seq.tolist()]
