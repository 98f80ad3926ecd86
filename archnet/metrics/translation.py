"""Translate a Multi30k split with beam search (or greedy) and score it with BLEU.

:func:`split_sources` gives the source ids and raw references of any split (the data
module's own splits, or a further test split such as ``test_2017_mscoco`` encoded with the
same tokenizer); :func:`decode_sources` translates id tensors in length-bucketed batches;
:func:`score_split` returns sacreBLEU (detokenised, cased, ``13a``) and the paper-comparable
BLEU (lower-cased, word-tokenised, ``tokenize='none'``; :mod:`archnet.metrics.bleu`), each
with its signature. Output ids the tokenizer does not have (a model vocabulary padded past
the tokenizer's) are never generated.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from archnet.data.multi30k import TokenBatchSampler, read_lines
from archnet.decode.beam import beam_search, greedy_decode
from archnet.metrics.bleu import bleu_signature, corpus_bleu


def split_sources(dm: Any, split: str) -> tuple[list[Tensor], list[str]]:
    """``(source id tensors, raw references)`` of ``split`` in file order."""
    if split in dm.datasets:
        return list(dm.split(split).src), dm.references(split)
    tok = dm.tokenizer
    src_lines = read_lines(dm.data_dir, split, dm.src_lang)
    refs = read_lines(dm.data_dir, split, dm.tgt_lang)
    wrap = ([tok.bos_id], [tok.eos_id]) if dm.src_bos_eos else ([], [])
    ids = [torch.tensor(wrap[0] + s + wrap[1], dtype=torch.long) for s in tok.encode(src_lines, dm.src_lang)]
    return ids, refs


def resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``auto``: CUDA when available; ``None``: where the model is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device is None:
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    return torch.device(device)


@contextmanager
def on_device(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Temporarily move ``model`` to ``device`` (back where it was afterwards)."""
    p = next(model.parameters(), None)
    home = p.device if p is not None else device
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


@torch.no_grad()
def decode_sources(model: nn.Module, sources: Sequence[Tensor], tokenizer: Any, beam: int = 5,
                   max_len: int = 100, alpha: float = 0.7, max_tokens: int = 4096,
                   max_sentences: int | None = None, device: str | torch.device | None = None
                   ) -> list[list[int]]:
    """Output ids (no BOS/EOS) for every source, in order; ``beam=1`` is greedy."""
    dev = resolve_device(device, model)
    vocab = int(model.cfg.vocab_size) if hasattr(model, "cfg") else tokenizer.vocab_size
    banned = tuple(range(tokenizer.vocab_size, vocab))  # ids past the tokenizer's vocabulary
    out: list[list[int]] = [[] for _ in sources]
    sampler = TokenBatchSampler([len(s) for s in sources], max_tokens, max_sentences, shuffle=False)
    with on_device(model, dev):
        for idx in sampler:
            src = pad_sequence([sources[i] for i in idx], batch_first=True,
                               padding_value=tokenizer.pad_id).to(dev)
            if beam > 1:
                hyps = beam_search(model, src, tokenizer.bos_id, tokenizer.eos_id, beam, max_len, alpha,
                                   tokenizer.pad_id, banned_ids=banned)
            else:
                hyps = greedy_decode(model, src, tokenizer.bos_id, tokenizer.eos_id, max_len, tokenizer.pad_id)
                hyps = [[t if t < tokenizer.vocab_size else tokenizer.unk_id for t in h] for h in hyps]
            for i, h in zip(idx, hyps):
                out[i] = h
    return out


def score_split(model: nn.Module, dm: Any, split: str, beam: int = 5, max_len: int = 100,
                alpha: float = 0.7, limit: int | None = None, max_tokens: int = 4096,
                device: str | torch.device | None = None) -> dict[str, Any]:
    """BLEU of ``model`` on ``split`` (the first ``limit`` sentences when set):
    ``bleu``, ``bleu_signature``, ``bleu_paper``, ``bleu_paper_signature``, ``sentences``."""
    sources, refs = split_sources(dm, split)
    if limit is not None:
        sources, refs = sources[:limit], refs[:limit]
    ids = decode_sources(model, sources, dm.tokenizer, beam, max_len, alpha, max_tokens, device=device)
    hyps = [dm.detokenize(h) for h in ids]
    return {"bleu": float(corpus_bleu(hyps, refs).score),
            "bleu_signature": bleu_signature("sacrebleu"),
            "bleu_paper": float(corpus_bleu(hyps, refs, mode="paper", lang=dm.tgt_lang).score),
            "bleu_paper_signature": bleu_signature("paper"),
            "sentences": len(refs)}


def macs_per_token(model: nn.Module) -> int:
    """Linear-layer MACs to encode one source token and decode one target token: encoder
    ``n_enc (4 d^2 + 2 d d_inner)``, cross-attention keys/values ``2 n_dec d^2``, decoder
    ``n_dec (6 d^2 + 2 d d_inner) + d V``. Attention scores and weighted sums (which grow
    with the sentence length) and embedding lookups are not counted."""
    c = model.cfg
    d, di = c.d_model, c.d_inner
    return (c.n_enc * (4 * d * d + 2 * d * di) + 2 * c.n_dec * d * d
            + c.n_dec * (6 * d * d + 2 * d * di) + d * c.vocab_size)
