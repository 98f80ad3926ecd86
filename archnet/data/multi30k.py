"""Multi30k Task 1 (English-German) from the raw ``.gz`` files, as a LightningDataModule.

Files ``<split>.{en,de}.gz`` with ``split`` in :data:`SPLITS` live in ``data_dir`` (default
``../shared/data/multi30k`` next to the repository when present); :func:`download` fetches
them from the dataset's public GitHub repository (``multi30k/dataset``, ``data/task1/raw/``,
pinned commit) and checks their sha256.

Examples are ``(src_ids, tgt_ids)`` LongTensors, both wrapped in ``<s> ... </s>`` (the source
as in the authors' training data; ``src_bos_eos=False`` drops that); training pairs longer
than ``max_len`` tokens on either side (specials excluded) are dropped, as in the authors'
preprocessing. Batches are padded with the pad id and bucketed by length
(:class:`TokenBatchSampler`). ``references(split)`` gives the raw target sentences for BLEU.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from archnet.data.tokenize import (
    KINDS,
    BpeTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)
from archnet.errors import ConfigError

SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
DIRECTIONS = ("en-de", "de-en")
REPO_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
RAW_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{REPO_COMMIT}/data/task1/raw/"
SHA256 = {  # of the .gz files as stored in the source repository (data/multi30k/README.md)
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
}


def default_data_dir() -> Path | None:
    """``<repo>/../shared/data/multi30k`` when it exists, else ``None``."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"
    return path if path.is_dir() else None


def download(data_dir: str | Path, timeout: float = 30.0) -> Path:
    """Fetch every raw en/de file missing from ``data_dir``; verify sha256.

    Raises:
        ConfigError: when a file cannot be fetched (e.g. no internet) or its checksum differs.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        path = data_dir / name
        if path.is_file():
            continue
        try:
            with urllib.request.urlopen(RAW_URL + name, timeout=timeout) as resp:
                blob = resp.read()
        except (urllib.error.URLError, OSError) as err:
            raise ConfigError("data.module.download", RAW_URL + name,
                              f"cannot fetch ({getattr(err, 'reason', err)}); without internet, "
                              f"copy the raw Multi30k .gz files into {data_dir}") from None
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ConfigError("data.module.download", RAW_URL + name, f"sha256 differs from {digest}")
        path.write_bytes(blob)
    return data_dir


def read_lines(data_dir: str | Path, split: str, lang: str) -> list[str]:
    """Sentences of one split and language, stripped of surrounding whitespace."""
    if split not in SPLITS:
        raise ConfigError("data.split", split, SPLITS)
    path = Path(data_dir) / f"{split}.{lang}.gz"
    if not path.is_file():
        raise ConfigError("data.module.data_dir", str(data_dir),
                          f"no {path.name}; copy the raw Multi30k files there or call download()")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.strip() for line in fh.read().splitlines()]


def parse_direction(direction: str) -> tuple[str, str]:
    if direction not in DIRECTIONS:
        raise ConfigError("data.module.direction", direction, DIRECTIONS)
    src, tgt = direction.split("-")
    return src, tgt


class PairDataset(Dataset):
    """``(src_ids, tgt_ids)`` pairs of 1-D LongTensors."""

    def __init__(self, src: Sequence[Tensor], tgt: Sequence[Tensor]) -> None:
        if len(src) != len(tgt):
            raise ValueError("source and target counts differ")
        self.src, self.tgt = list(src), list(tgt)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]

    def lengths(self) -> list[int]:
        """Padded length of each pair: ``max(len(src), len(tgt))``."""
        return [max(len(s), len(t)) for s, t in zip(self.src, self.tgt)]


class PadCollate:
    """Stack a list of pairs into ``(src [B, S], tgt [B, T])`` right-padded with ``pad_id``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        src = pad_sequence([b[0] for b in batch], batch_first=True, padding_value=self.pad_id)
        tgt = pad_sequence([b[1] for b in batch], batch_first=True, padding_value=self.pad_id)
        return src, tgt


class TokenBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches: sort by length, cut greedily so that ``n * max_len <= max_tokens``
    (padded tokens per side) and ``n <= max_sentences``, then shuffle the batch order.

    With ``shuffle`` the order of equal-length examples and of batches is drawn from
    ``seed + epoch`` (Lightning calls :meth:`set_epoch`). With ``num_replicas > 1`` each rank
    takes every ``num_replicas``-th batch of a list cut to a multiple of ``num_replicas``.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int | None = None,
                 max_sentences: int | None = None, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if not max_tokens and not max_sentences:
            raise ConfigError("data.module.max_tokens", max_tokens, "set max_tokens or batch_size")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            perm = torch.randperm(len(self.lengths), generator=g)
            order = perm[torch.sort(self.lengths[perm], stable=True).indices]
        else:
            order = torch.sort(self.lengths, stable=True).indices
        out: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0
        for i in order.tolist():
            new_max = max(cur_max, int(self.lengths[i]))
            full = (self.max_tokens and new_max * (len(cur) + 1) > self.max_tokens) or (
                self.max_sentences and len(cur) + 1 > self.max_sentences)
            if cur and full:
                out.append(cur)
                cur, new_max = [], int(self.lengths[i])
            cur.append(i)
            cur_max = new_max
        if cur:
            out.append(cur)
        if self.shuffle:
            out = [out[j] for j in torch.randperm(len(out), generator=g).tolist()]
        if self.num_replicas > 1:
            out = out[: len(out) - len(out) % self.num_replicas][self.rank:: self.num_replicas]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())


class Multi30kDataModule(pl.LightningDataModule):
    """Multi30k en-de / de-en with a ``bpe`` (default) or ``word`` tokenizer.

    Args:
        data_dir: folder with the raw ``.gz`` files (default :func:`default_data_dir`).
        direction: ``en-de`` or ``de-en``.
        tokenizer: ``bpe`` (joint sentencepiece, ``bpe_vocab_size``) or ``word`` (the paper's:
            lower-cased rule-based words, shared vocabulary, ``min_freq``).
        max_tokens: padded tokens per side per training batch; ``batch_size`` caps sentences
            (the paper: 48 sentences, no token cap).
        vocab_dir: where the tokenizer is saved and, on later runs, loaded from; ``None``
            keeps it in memory. A saved tokenizer built with other settings is an error.
        subset: keep only the first ``subset`` training pairs (vocabulary built from them).
        holdout: the last ``holdout`` training pairs form the ``holdout`` split (excluded
            from training and from the vocabulary), for checkpoint selection.
        val_split: split served by ``val_dataloader`` (``val`` or ``holdout``).
        test_split: split served by ``test_dataloader``.
    """

    def __init__(self, data_dir: str | Path | None = None, direction: str = "en-de",
                 tokenizer: str = "bpe", max_tokens: int | None = 4096,
                 batch_size: int | None = None, vocab_dir: str | Path | None = None,
                 bpe_vocab_size: int = 8000, min_freq: int = 3, word_backend: str = "spacy",
                 lower: bool | None = None, max_len: int = 100, subset: int | None = None,
                 holdout: int = 0, val_split: str = "val", test_split: str = "test_2016_flickr",
                 src_bos_eos: bool = True, eval_max_tokens: int | None = None,
                 num_workers: int = 0, seed: int = 0, download: bool = False,
                 n_train: int | None = None, n_val: int | None = None,
                 n_test: int | None = None) -> None:
        super().__init__()
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.module.{key}", value, "a positive integer or null")
        if n_train is not None:  # debug limits (conf/debug/fast.yaml): first n pairs per split
            subset = min(subset or n_train, n_train)
        self.eval_limit = {"val": n_val, test_split: n_test}
        if tokenizer not in KINDS:
            raise ConfigError("data.module.tokenizer", tokenizer, KINDS)
        self.src_lang, self.tgt_lang = parse_direction(direction)
        data_dir = data_dir if data_dir is not None else default_data_dir()
        if data_dir is None:
            raise ConfigError("data.module.data_dir", None, "set it to the folder of the Multi30k .gz files")
        if not download and not (Path(data_dir) / f"train.{self.src_lang}.gz").is_file():
            raise ConfigError("data.module.data_dir", str(data_dir),
                              f"a folder holding the raw Multi30k files (train.{self.src_lang}.gz "
                              "is missing; copy them there or set data.module.download=true)")
        self.data_dir, self.direction, self.kind = Path(data_dir), direction, tokenizer
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.eval_max_tokens = eval_max_tokens or max_tokens
        self.vocab_dir = Path(vocab_dir) if vocab_dir is not None else None
        self.bpe_vocab_size, self.min_freq, self.word_backend = bpe_vocab_size, min_freq, word_backend
        self.lower = (tokenizer == "word") if lower is None else lower
        self.max_len, self.subset, self.holdout = max_len, subset, holdout
        self.val_split, self.test_split = val_split, test_split
        self.src_bos_eos, self.num_workers, self.seed = src_bos_eos, num_workers, seed
        self.download = download
        self.tokenizer: Tokenizer | None = None
        self.datasets: dict[str, PairDataset] = {}
        self.raw: dict[str, tuple[list[str], list[str]]] = {}

    # -- settings that must match a saved tokenizer --------------------------------------
    def _settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"tokenizer": self.kind, "lower": self.lower, "subset": self.subset,
                             "holdout": self.holdout}
        if self.kind == "word":
            s.update(direction=self.direction, min_freq=self.min_freq, backend=self.word_backend)
        else:
            s.update(bpe_vocab_size=self.bpe_vocab_size)
        return s

    def _build_tokenizer(self, src: list[str], tgt: list[str]) -> Tokenizer:
        d = self.vocab_dir
        if d is not None and (d / "data.json").is_file():
            saved = json.loads((d / "data.json").read_text(encoding="utf-8"))
            if saved != self._settings():
                raise ConfigError("data.module.vocab_dir", str(d),
                                  f"holds a tokenizer built with {saved}, not {self._settings()}")
            return load_tokenizer(d)
        if self.kind == "word":
            tok: Tokenizer = WordTokenizer.train(src, tgt, self.src_lang, self.tgt_lang,
                                                 self.min_freq, self.word_backend, self.lower)
        else:  # one model for both directions: always en then de
            en, de = (src, tgt) if self.src_lang == "en" else (tgt, src)
            tok = BpeTokenizer.train(en + de, self.bpe_vocab_size, self.lower)
        if d is not None:
            tok.save(d)
            (d / "data.json").write_text(json.dumps(self._settings()) + "\n", encoding="utf-8")
        return tok

    def _encode(self, src: list[str], tgt: list[str], filter_long: bool) -> PairDataset:
        assert self.tokenizer is not None
        tok = self.tokenizer
        s_ids, t_ids = tok.encode(src, self.src_lang), tok.encode(tgt, self.tgt_lang)
        bos, eos = [tok.bos_id], [tok.eos_id]
        out_s, out_t = [], []
        for s, t in zip(s_ids, t_ids):
            if filter_long and (len(s) > self.max_len or len(t) > self.max_len):
                continue
            out_s.append(torch.tensor(bos + s + eos if self.src_bos_eos else s, dtype=torch.long))
            out_t.append(torch.tensor(bos + t + eos, dtype=torch.long))
        return PairDataset(out_s, out_t)

    def prepare_data(self) -> None:
        if self.download:
            download(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        src = read_lines(self.data_dir, "train", self.src_lang)
        tgt = read_lines(self.data_dir, "train", self.tgt_lang)
        if self.subset is not None:
            src, tgt = src[: self.subset], tgt[: self.subset]
        cut = len(src) - self.holdout
        self.raw["train"] = (src[:cut], tgt[:cut])
        if self.holdout:
            self.raw["holdout"] = (src[cut:], tgt[cut:])
        for split in ("val", self.test_split):
            n = self.eval_limit.get(split)
            self.raw[split] = (read_lines(self.data_dir, split, self.src_lang)[:n],
                               read_lines(self.data_dir, split, self.tgt_lang)[:n])
        self.tokenizer = self._build_tokenizer(*self.raw["train"])
        for split, (s, t) in self.raw.items():
            self.datasets[split] = self._encode(s, t, filter_long=split == "train")

    # -- public accessors ------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self._tok().pad_id

    @property
    def vocab_size(self) -> int:
        return self._tok().vocab_size

    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RuntimeError("call setup() first")
        return self.tokenizer

    def split(self, name: str) -> PairDataset:
        self._tok()
        if name not in self.datasets:
            raise ConfigError("data.split", name, sorted(self.datasets))
        return self.datasets[name]

    @property
    def train_set(self) -> PairDataset:
        return self.split("train")

    @property
    def holdout_set(self) -> PairDataset:
        """The split that selects checkpoints: ``val_split`` (``val`` or ``holdout``)."""
        return self.split(self.val_split)

    @property
    def test_set(self) -> PairDataset:
        return self.split(self.test_split)

    def references(self, split: str) -> list[str]:
        """Raw (detokenised, cased) target sentences of ``split``, in file order."""
        self.split(split)
        return list(self.raw[split][1])

    def sources(self, split: str) -> list[str]:
        self.split(split)
        return list(self.raw[split][0])

    def detokenize(self, ids: Sequence[int]) -> str:
        """Target-language text of one output id sequence."""
        return self._tok().decode(ids, self.tgt_lang)

    def _loader(self, split: str, shuffle: bool, max_tokens: int | None) -> DataLoader:
        ds = self.split(split)
        replicas, rank = 1, 0
        trainer = getattr(self, "trainer", None)
        if shuffle and trainer is not None:
            replicas, rank = trainer.world_size, trainer.global_rank
        sampler = TokenBatchSampler(ds.lengths(), max_tokens, self.batch_size, shuffle, self.seed,
                                    replicas, rank)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=PadCollate(self.pad_id),
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.max_tokens)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, False, self.eval_max_tokens)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, False, self.eval_max_tokens)

    def translation_batches(self, split: str, max_tokens: int | None = None
                            ) -> Iterator[tuple[list[int], Tensor]]:
        """``(indices, src [B, S])`` over ``split`` bucketed by source length, for decoding;
        ``indices`` index :meth:`references`."""
        ds = self.split(split)
        sampler = TokenBatchSampler([len(s) for s in ds.src], max_tokens or self.eval_max_tokens,
                                    self.batch_size, shuffle=False)
        for idx in sampler:
            yield idx, pad_sequence([ds.src[i] for i in idx], batch_first=True,
                                    padding_value=self.pad_id)
