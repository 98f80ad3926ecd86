"""Tiny Transformer helpers shared by the transformer-track tests."""
from __future__ import annotations

import torch

from archnet.models.transformer import Transformer, TransformerConfig

PAD, BOS, EOS = 1, 2, 3


def tiny_cfg(vocab: int = 24, **kw) -> TransformerConfig:
    base = {"vocab_size": vocab, "pad_id": PAD, "d_model": 16, "d_inner": 24, "n_enc": 2,
            "n_dec": 2, "n_head": 2, "dropout": 0.1, "n_position": 64}
    return TransformerConfig(**{**base, **kw})


def padded_batch(vocab: int, lengths: list[int], seed: int = 0, bos_eos: bool = True) -> torch.Tensor:
    """Rows of random word ids (>= 4) with BOS/EOS, right-padded with PAD."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths) + (2 if bos_eos else 0)
    out = torch.full((len(lengths), width), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        words = torch.randint(4, vocab, (n,), generator=g)
        row = torch.cat([torch.tensor([BOS]), words, torch.tensor([EOS])]) if bos_eos else words
        out[i, : len(row)] = row
    return out


def tiny_teacher(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_cfg(**kw)).eval()
