"""Decode an image list once into a memory-mapped ``uint8`` array, reused on reruns.

Layout of one cache entry, ``<cache_dir>/<key>/``:

* ``images.npy`` -- ``N x S x S x 3`` uint8 (shorter side resized to ``S``, centre crop S x S);
* ``labels.npy`` -- ``N`` int64;
* ``meta.json``  -- kept relative paths, skipped files with their errors, size, key.

``key = sha256("archnet-decode-v1", S, every "path<TAB>label")[:20]``: the same file list
and size hit the same entry wherever the data set lives. An entry is built in a temporary
folder and renamed into place when complete, so an interrupted build leaves nothing behind
and concurrent builders (DDP ranks) cannot corrupt each other. Undecodable files are
skipped (:class:`~archnet.data.image_folder.DecodeReport`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from archnet.data.image_folder import DecodeReport, FolderIndex, try_decode

log = logging.getLogger(__name__)
VERSION = "archnet-decode-v1"


def cache_key(paths: Sequence[str], labels: Sequence[int], size: int) -> str:
    """Hex key of a (file list, labels, size) triple."""
    h = hashlib.sha256(f"{VERSION}\n{size}\n".encode())
    for p, y in zip(paths, labels, strict=True):
        h.update(f"{p}\t{int(y)}\n".encode())
    return h.hexdigest()[:20]


class DecodedImages(Dataset):
    """``(uint8 C x S x S tensor, label)`` items of one cache entry.

    The memory map is opened lazily in each process (pickling sends only the path).
    """

    def __init__(self, entry: Path) -> None:
        self.entry = Path(entry)
        meta = json.loads((self.entry / "meta.json").read_text())
        self.paths: list[str] = meta["paths"]
        self.size: int = meta["size"]
        self.report = DecodeReport(meta["where"], meta["total"], [tuple(b) for b in meta["bad"]])
        self.labels = np.load(self.entry / "labels.npy")
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.entry / "images.npy", mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1).contiguous()
        return x, int(self.labels[i])

    @property
    def targets(self) -> Tensor:
        return torch.from_numpy(np.asarray(self.labels, dtype=np.int64))


def decode_to_cache(index: FolderIndex, size: int, cache_dir: str | Path,
                    max_bad_fraction: float = 0.01, num_workers: int = 0) -> DecodedImages:
    """The cache entry of ``index`` at ``size``: loaded if present, else decoded and written.

    ``num_workers`` > 0 decodes with that many threads (PIL releases the GIL while decoding).
    """
    cache_dir = Path(cache_dir)
    entry = cache_dir / cache_key(index.paths, index.labels, size)
    if (entry / "meta.json").is_file():
        data = DecodedImages(entry)
        data.report.check(max_bad_fraction)
        return data
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        report = _build(index, size, tmp, num_workers, entry.name)
        report.check(max_bad_fraction)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished first: use its entry
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("decode cache: %d images at %dpx in %s", len(index) - len(report.bad), size, entry)
    return DecodedImages(entry)


def _build(index: FolderIndex, size: int, out: Path, num_workers: int, key: str) -> DecodeReport:
    n = len(index)
    report = DecodeReport(str(index.base), n)
    raw = np.lib.format.open_memmap(out / "raw.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    ok = np.zeros(n, dtype=bool)

    def one(i: int) -> tuple[int, np.ndarray | None]:
        return i, try_decode(index.base, index.paths[i], size, report)

    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as pool:
            results = pool.map(one, range(n))
            for i, img in results:
                if img is not None:
                    raw[i], ok[i] = img, True
    else:
        for i in range(n):
            img = one(i)[1]
            if img is not None:
                raw[i], ok[i] = img, True
    report.bad.sort()
    keep = np.flatnonzero(ok)
    if len(keep) == n:
        raw.flush()
        del raw
        os.replace(out / "raw.npy", out / "images.npy")
    else:
        images = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(keep), size, size, 3))
        for start in range(0, len(keep), 4096):
            rows = keep[start:start + 4096]
            images[start:start + len(rows)] = raw[rows]
        images.flush()
        del images, raw
        (out / "raw.npy").unlink()
    np.save(out / "labels.npy", np.asarray(index.labels, dtype=np.int64)[keep])
    meta = {"key": key, "version": VERSION, "size": size, "where": report.where, "total": n,
            "paths": [index.paths[i] for i in keep], "bad": report.bad}
    (out / "meta.json").write_text(json.dumps(meta))
    return report
