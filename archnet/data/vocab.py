"""Word vocabulary shared by source and target (the paper's ``main_wo_bpe`` settings).

Ids 0-3 are the specials in the order of the legacy torchtext ``Field`` the authors' data
came from: ``<unk>`` 0, ``<blank>`` (pad) 1, ``<s>`` (BOS) 2, ``</s>`` (EOS) 3. Each side's
words with count >= ``min_freq`` are sorted by count (descending, ties alphabetical); the
shared vocabulary is the source list followed by the target words the source lacks.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

UNK, PAD, BOS, EOS = "<unk>", "<blank>", "<s>", "</s>"
SPECIALS = (UNK, PAD, BOS, EOS)
UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def _frequent(counts: Counter[str], min_freq: int) -> list[str]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, c in ranked if c >= min_freq and w not in SPECIALS]


class Vocab:
    """Token <-> id map with the specials at ids 0-3; unknown tokens map to ``<unk>``."""

    def __init__(self, itos: Sequence[str]) -> None:
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")

    @classmethod
    def build(cls, src_sentences: Iterable[Sequence[str]], tgt_sentences: Iterable[Sequence[str]],
              min_freq: int = 3) -> Vocab:
        """Shared vocabulary from tokenised training sentences of both sides."""
        src = _frequent(Counter(t for s in src_sentences for t in s), min_freq)
        tgt = _frequent(Counter(t for s in tgt_sentences for t in s), min_freq)
        seen = set(src)
        return cls(list(SPECIALS) + src + [w for w in tgt if w not in seen])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))
