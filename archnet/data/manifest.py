"""The label-free training manifest: which train images distillation may see.

Given the relative paths of the train split (sorted; their order defines the indices):

* the **held-out slice** (``holdout`` images, for checkpoint selection) is the ``holdout``
  paths with the smallest ``sha256("holdout:<holdout_seed>:<path>")``;
* the **training set** is, among the rest, the ``n`` paths with the smallest
  ``sha256("train:<seed>:<path>")``.

Ranking by a hash of (seed, path) depends on nothing but the seed and the file list -- not
on a library's RNG, the process or the rank -- so every DDP rank and every rerun computes
the same manifest, and a different seed gives a different one. ``sha256`` of the manifest
is the hash of the sorted selected relative paths; ``file_list_sha256`` that of the whole
sorted train list (checked when a saved manifest is loaded against a data set).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from archnet.errors import ConfigError

FILE_NAME = "manifest.json"


def paths_sha256(paths: Iterable[str]) -> str:
    """sha256 of the sorted relative paths, one per line."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode() + b"\n")
    return h.hexdigest()


def _rank(paths: Sequence[str], candidates: Iterable[int], salt: str, k: int) -> list[int]:
    scored = sorted(candidates, key=lambda i: hashlib.sha256(f"{salt}:{paths[i]}".encode()).digest())
    return sorted(scored[:k])


@dataclass(frozen=True)
class Manifest:
    """Indices into the sorted train list: ``train`` (``n`` images) and ``holdout``."""

    seed: int
    holdout_seed: int
    num_files: int
    file_list_sha256: str
    train: tuple[int, ...]
    holdout: tuple[int, ...]
    sha256: str

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "train": list(self.train), "holdout": list(self.holdout)}
        path.write_text(json.dumps(data, indent=0))
        return path

    @classmethod
    def load(cls, run_dir: str | Path, paths: Sequence[str] | None = None) -> Manifest:
        """Read ``<run_dir>/manifest.json``; with ``paths``, check it was made from that list."""
        data = json.loads((Path(run_dir) / FILE_NAME).read_text())
        m = cls(**{**data, "train": tuple(data["train"]), "holdout": tuple(data["holdout"])})
        if paths is not None and paths_sha256(paths) != m.file_list_sha256:
            raise ConfigError("data.manifest", str(Path(run_dir) / FILE_NAME),
                              "was made from a different train file list")
        return m

    def train_paths(self, paths: Sequence[str]) -> list[str]:
        ordered = sorted(paths)
        return [ordered[i] for i in self.train]

    def holdout_paths(self, paths: Sequence[str]) -> list[str]:
        ordered = sorted(paths)
        return [ordered[i] for i in self.holdout]


def build_manifest(paths: Sequence[str], n: int, seed: int, holdout: int = 0,
                   holdout_seed: int = 0) -> Manifest:
    """Draw ``n`` training images and a ``holdout`` slice from ``paths`` (module docstring).

    ``n <= 0`` takes every image outside the held-out slice.
    """
    ordered = sorted(paths)
    if len(set(ordered)) != len(ordered):
        raise ConfigError("data.manifest", "paths", "relative paths must be unique")
    if holdout < 0 or holdout + max(n, 0) > len(ordered):
        raise ConfigError("data.train_samples", n, f"n + holdout ({holdout}) at most the "
                          f"{len(ordered)} train images")
    held = _rank(ordered, range(len(ordered)), f"holdout:{holdout_seed}", holdout)
    held_set = set(held)
    rest = [i for i in range(len(ordered)) if i not in held_set]
    train = _rank(ordered, rest, f"train:{seed}", n) if n > 0 else rest
    return Manifest(seed, holdout_seed, len(ordered), paths_sha256(ordered), tuple(train),
                    tuple(held), paths_sha256(ordered[i] for i in train))
