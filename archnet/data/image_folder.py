"""ImageNet-layout image folders: ``<root>/<split>/<wnid>/<file>``.

The class index of a wnid is its position in the sorted wnid list (or in an explicit
``classes`` list, which also restricts the scan to those folders). Paths are kept relative
to ``<root>/<split>`` in POSIX form and sorted, so they name a file independently of where
the data set lives. Decoding uses PIL and always yields ``H x W x 3`` ``uint8``: palette,
grayscale, CMYK, alpha and 16-bit files are converted to 8-bit RGB. A file PIL cannot
decode (truncated, empty, not an image) is skipped, counted and reported; more than
``max_bad_fraction`` of them is a :class:`~archnet.errors.ConfigError`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from archnet.data.transforms import from_hwc
from archnet.errors import ConfigError

log = logging.getLogger(__name__)
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff", ".gif")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class FolderIndex:
    """The files of one split: ``paths[i]`` (relative to ``base``) has label ``labels[i]``."""

    base: Path
    classes: list[str]
    paths: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, paths: Sequence[str]) -> FolderIndex:
        """The sub-index of ``paths`` (e.g. a manifest's), in the order given."""
        where = {p: i for i, p in enumerate(self.paths)}
        missing = [p for p in paths if p not in where]
        if missing:
            raise ConfigError("data.manifest", missing[:3], f"not files of {self.base}")
        return FolderIndex(self.base, self.classes, list(paths), [self.labels[where[p]] for p in paths])


def scan_folder(root: str | Path, split: str, classes: Sequence[str] | None = None,
                extensions: Sequence[str] = IMG_EXTENSIONS) -> FolderIndex:
    """Index ``<root>/<split>/<class>/*`` (files with an image extension, any case)."""
    base = Path(root) / split
    if not base.is_dir():
        raise ConfigError("data.root", str(root), f"has no {split}/ folder of class folders")
    found = sorted(p.name for p in base.iterdir() if p.is_dir())
    classes = list(classes) if classes is not None else found
    missing = sorted(set(classes) - set(found))
    if missing:
        raise ConfigError("data.root", str(root), f"{split}/ lacks class folders {missing[:5]}")
    exts = tuple(e.lower() for e in extensions)
    paths, labels = [], []
    for label, wnid in enumerate(classes):
        files = sorted(f for f in (base / wnid).rglob("*") if f.is_file() and f.suffix.lower() in exts)
        paths += [f.relative_to(base).as_posix() for f in files]
        labels += [label] * len(files)
    return FolderIndex(base, classes, paths, labels)


def pil_to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB version of ``img``. 16-bit and 32-bit integer grayscale are scaled by
    ``round(v / 257)`` (65535 -> 255; an ``I`` image whose maximum is <= 255 is taken as
    8-bit); float images in [0, 1] are scaled by 255; alpha is dropped."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif img.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode ``path`` to ``H x W x 3`` uint8. With ``size``: resize the shorter side to
    ``size`` (PIL bilinear, antialiased) and centre-crop ``size x size``. Raises the PIL error
    (one of :data:`DECODE_ERRORS`) for an undecodable file."""
    with Image.open(path) as img:
        img.load()
        rgb = pil_to_rgb(img)
    if size is not None:
        w, h = rgb.size
        nw, nh = (size, max(size, round(h * size / w))) if w <= h else (max(size, round(w * size / h)), size)
        if (nw, nh) != (w, h):
            rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8).copy()


@dataclass
class DecodeReport:
    """Undecodable files of one pass: ``bad`` holds ``(relative path, error)`` pairs."""

    where: str
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return len(self.bad) / max(1, self.total)

    def summary(self) -> str:
        first = "; ".join(f"{p} ({e})" for p, e in self.bad[:3])
        return f"{len(self.bad)} of {self.total} images under {self.where} undecodable, skipped" + \
            (f": {first}" + (" ..." if len(self.bad) > 3 else "") if self.bad else "")

    def check(self, max_bad_fraction: float) -> None:
        """Log the skipped files; ConfigError when more than ``max_bad_fraction`` failed."""
        if self.bad:
            log.warning("%s", self.summary())
        if self.fraction > max_bad_fraction:
            raise ConfigError("data.max_bad_fraction", max_bad_fraction,
                              f"exceeded: {self.summary()}")


def try_decode(base: Path, rel: str, size: int | None, report: DecodeReport) -> np.ndarray | None:
    """:func:`decode_rgb`, or None (recorded in ``report``) when the file cannot be decoded."""
    try:
        return decode_rgb(base / rel, size)
    except DECODE_ERRORS as e:
        report.bad.append((rel, " ".join(f"{type(e).__name__}: {e}".split())[:120]))
        return None


class ImageFolder(Dataset):
    """Lazily decoded ``(uint8 C x H x W tensor, label)`` pairs of one split.

    ``verify`` decodes every file once at construction (a full decode: the only reliable test
    for truncated files) and drops the undecodable ones (see :class:`DecodeReport`); without
    it a broken file raises when it is read. ``size`` as in :func:`decode_rgb`; ``transform``
    (deterministic, tensor -> tensor) runs on each image.
    """

    def __init__(self, root: str | Path, split: str, classes: Sequence[str] | None = None,
                 size: int | None = None, transform: Callable[[Tensor], Tensor] | None = None,
                 verify: bool = True, max_bad_fraction: float = 0.01) -> None:
        index = scan_folder(root, split, classes)
        self.base, self.classes, self.size, self.transform = index.base, index.classes, size, transform
        self.report = DecodeReport(str(index.base), len(index))
        keep = range(len(index))
        if verify:
            keep = [i for i, p in enumerate(index.paths) if try_decode(index.base, p, None, self.report) is not None]
            self.report.check(max_bad_fraction)
        self.paths = [index.paths[i] for i in keep]
        self.labels = [index.labels[i] for i in keep]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = from_hwc(decode_rgb(self.base / self.paths[i], self.size))
        return (self.transform(x) if self.transform else x), self.labels[i]

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor(self.labels, dtype=torch.long)
