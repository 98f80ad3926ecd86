"""Tokenizers for Multi30k: ``word`` (the paper's) and ``bpe`` (sentencepiece, the default).

Both map text to ids with the same specials (``<unk>`` 0, ``<blank>`` pad 1, ``<s>`` 2,
``</s>`` 3; see :mod:`archnet.data.vocab`), one id space shared by both languages, and are
trained on training text only.

* ``word``: rule-based tokenisation (``spacy.blank(lang)`` tokenizer, or sacremoses with
  ``backend="moses"``), lower-cased, :class:`Vocab` with ``min_freq`` 3. Decoding joins the
  tokens with spaces and re-attaches only " ," and " ." -- the post-processing of the
  authors' predictions and ``gt_*.txt`` references (reference section 10).
* ``bpe``: a joint sentencepiece BPE model (``vocab_size`` 8000, byte fallback so any
  character round-trips); decoding gives detokenised, cased text.

A tokenizer saves itself into a directory (``tokenizer.json`` plus ``vocab.json`` or
``spm.model``) and :func:`load_tokenizer` reads it back.
"""
from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from archnet.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab

META = "tokenizer.json"
KINDS = ("bpe", "word")


class Tokenizer(ABC):
    """Text <-> ids for one or both languages of a pair; no BOS/EOS added by ``encode``."""

    kind: str
    unk_id, pad_id, bos_id, eos_id = UNK_ID, PAD_ID, BOS_ID, EOS_ID

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, texts: Sequence[str], lang: str) -> list[list[int]]:
        """Ids of each text (no specials)."""

    @abstractmethod
    def decode(self, ids: Sequence[int], lang: str) -> str:
        """Text of one id sequence; pad, BOS and EOS are dropped."""

    @abstractmethod
    def meta(self) -> dict[str, Any]:
        """Settings that identify this tokenizer (written to ``tokenizer.json``)."""

    @abstractmethod
    def _save_model(self, directory: Path) -> None: ...

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        (directory / META).write_text(json.dumps(self.meta(), indent=1) + "\n", encoding="utf-8")

    def _strip(self, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]


@lru_cache(maxsize=8)
def _spacy_tokenizer(lang: str) -> Any:
    import spacy

    return spacy.blank(lang).tokenizer


@lru_cache(maxsize=8)
def _moses_tokenizer(lang: str) -> Any:
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=lang)


def split_words(texts: Sequence[str], lang: str, backend: str = "spacy",
                lower: bool = True) -> list[list[str]]:
    """Rule-based word tokenisation (spaCy's tokenizer rules or Moses), then lower-casing."""
    if backend == "spacy":
        docs = _spacy_tokenizer(lang).pipe(list(texts), batch_size=2000)
        out = [[t.text for t in doc if not t.is_space] for doc in docs]
    elif backend == "moses":
        mt = _moses_tokenizer(lang)
        out = [mt.tokenize(t, escape=False) for t in texts]
    else:
        raise ValueError(f"word backend {backend!r}: one of spacy, moses")
    return [[t.lower() for t in s] for s in out] if lower else out


def join_words(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces with " ," and " ." re-attached (the authors' post-processing)."""
    return " ".join(tokens).replace(" ,", ",").replace(" .", ".")


class WordTokenizer(Tokenizer):
    """Lower-cased rule-based words and a shared min-frequency vocabulary."""

    kind = "word"

    def __init__(self, vocab: Vocab, backend: str = "spacy", lower: bool = True,
                 min_freq: int = 3) -> None:
        self.vocab, self.backend, self.lower, self.min_freq = vocab, backend, lower, min_freq

    @classmethod
    def train(cls, src: Sequence[str], tgt: Sequence[str], src_lang: str, tgt_lang: str,
              min_freq: int = 3, backend: str = "spacy", lower: bool = True) -> WordTokenizer:
        vocab = Vocab.build(split_words(src, src_lang, backend, lower),
                            split_words(tgt, tgt_lang, backend, lower), min_freq)
        return cls(vocab, backend, lower, min_freq)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokens(self, texts: Sequence[str], lang: str) -> list[list[str]]:
        return split_words(texts, lang, self.backend, self.lower)

    def encode(self, texts: Sequence[str], lang: str) -> list[list[int]]:
        return [self.vocab.encode(s) for s in self.tokens(texts, lang)]

    def decode(self, ids: Sequence[int], lang: str) -> str:
        return join_words(self.vocab.decode(self._strip(ids)))

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "backend": self.backend, "lower": self.lower,
                "min_freq": self.min_freq, "vocab_size": self.vocab_size}

    def _save_model(self, directory: Path) -> None:
        self.vocab.save(directory / "vocab.json")


class BpeTokenizer(Tokenizer):
    """A joint sentencepiece BPE model over both languages."""

    kind = "bpe"

    def __init__(self, model_proto: bytes, lower: bool = False) -> None:
        import sentencepiece as spm

        self.model_proto, self.lower = model_proto, lower
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        specials = tuple(self.sp.id_to_piece(i) for i in range(len(SPECIALS)))
        if specials != SPECIALS:
            raise ValueError(f"sentencepiece model specials {specials} != {SPECIALS}")

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int = 8000, lower: bool = False) -> BpeTokenizer:
        """Train on ``texts`` (all training sentences of both languages)."""
        import sentencepiece as spm

        buf = io.BytesIO()
        lines = [t.lower() if lower else t for t in texts]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
            model_type="bpe", character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False,
            unk_id=UNK_ID, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_piece=SPECIALS[0],
            pad_piece=SPECIALS[1], bos_piece=SPECIALS[2], eos_piece=SPECIALS[3],
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
            minloglevel=2)
        return cls(buf.getvalue(), lower)

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, texts: Sequence[str], lang: str) -> list[list[int]]:
        return self.sp.encode([t.lower() if self.lower else t for t in texts])

    def decode(self, ids: Sequence[int], lang: str) -> str:
        return self.sp.decode(self._strip(ids))

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "lower": self.lower, "vocab_size": self.vocab_size}

    def _save_model(self, directory: Path) -> None:
        (directory / "spm.model").write_bytes(self.model_proto)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read a tokenizer written by :meth:`Tokenizer.save`."""
    directory = Path(directory)
    meta = json.loads((directory / META).read_text(encoding="utf-8"))
    if meta["kind"] == "word":
        return WordTokenizer(Vocab.load(directory / "vocab.json"), meta["backend"], meta["lower"],
                             meta["min_freq"])
    if meta["kind"] == "bpe":
        return BpeTokenizer((directory / "spm.model").read_bytes(), meta["lower"])
    raise ValueError(f"{directory / META}: unknown tokenizer kind {meta['kind']!r}")
