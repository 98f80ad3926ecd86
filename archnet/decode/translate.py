"""Translate a whole split of a :class:`~archnet.data.multi30k.Multi30kDataModule`."""
from __future__ import annotations

from typing import Any

import torch

from archnet.decode.beam import Seq2Seq, beam_search, greedy_decode


def translate(model: Seq2Seq, dm: Any, split: str, beam: int = 5, max_len: int = 100,
              alpha: float = 0.7, max_tokens: int | None = None,
              device: torch.device | str | None = None) -> list[str]:
    """Detokenised hypotheses for every source sentence of ``split``, in file order (aligned
    with ``dm.references(split)``). ``beam=1`` is greedy decoding; the source batches are
    bucketed by length (``dm.translation_batches``)."""
    tok = dm.tokenizer
    out = [""] * len(dm.split(split))
    for idx, src in dm.translation_batches(split, max_tokens):
        src = src.to(device) if device is not None else src
        if beam > 1:
            hyps = beam_search(model, src, tok.bos_id, tok.eos_id, beam, max_len, alpha, tok.pad_id)
        else:
            hyps = greedy_decode(model, src, tok.bos_id, tok.eos_id, max_len, tok.pad_id)
        for i, h in zip(idx, hyps):
            out[i] = dm.detokenize(h)
    return out
