"""Tiny-ImageNet-200 from the shared tarballs (``../shared/data/tiny-imagenet-200``).

:func:`prepare` extracts ``train-0.tar.gz`` (classes 0-99 in sorted wnid order), for 200
classes also ``train-1.tar.gz`` (classes 100-199), and ``val.tar.gz`` into a git-ignored
cache (default ``<repo>/.cache/data/tiny-imagenet-200``), after checking each archive's
sha256 against the checksum list in the source folder's ``README.md``. A marker file per
archive makes reruns free; a file lock serialises concurrent callers (DDP ranks). With 100
classes the val split is restricted to the first 100 wnids of ``classes.tsv``.
"""
from __future__ import annotations

import fcntl
import hashlib
import re
import tarfile
from pathlib import Path

from archnet.data.image_folder import FolderIndex, scan_folder
from archnet.errors import ConfigError

NAME = "tiny-imagenet-200"
NUM_CLASSES = (100, 200)
_SUM = re.compile(r"^\s*([0-9a-f]{64})\s+(\S+)\s*$")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_source_dir() -> Path:
    return repo_root().parent / "shared" / "data" / NAME


def default_cache_dir() -> Path:
    return repo_root() / ".cache" / "data"


def read_checksums(readme: Path) -> dict[str, str]:
    """``{file name: sha256}`` from the README lines ``<64 hex digits>  <name>``."""
    if not readme.is_file():
        raise ConfigError("data.source_dir", str(readme.parent), "has no README.md with checksums")
    sums = {}
    for line in readme.read_text().splitlines():
        m = _SUM.match(line)
        if m:
            sums[m.group(2)] = m.group(1)
    return sums


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_classes(source_dir: Path | None = None, num_classes: int = 200) -> list[str]:
    """The first ``num_classes`` wnids of ``classes.tsv`` (sorted order; index = line)."""
    if num_classes not in NUM_CLASSES:
        raise ConfigError("data.num_classes", num_classes, NUM_CLASSES)
    path = Path(source_dir or default_source_dir()) / "classes.tsv"
    if not path.is_file():
        raise ConfigError("data.source_dir", str(path.parent), "has no classes.tsv")
    wnids = [line.split("\t")[0] for line in path.read_text().splitlines() if line.strip()]
    return wnids[:num_classes]


def archives(num_classes: int) -> list[str]:
    return ["train-0.tar.gz", "val.tar.gz"] + (["train-1.tar.gz"] if num_classes == 200 else [])


def prepare(num_classes: int = 200, source_dir: str | Path | None = None,
            cache_dir: str | Path | None = None) -> Path:
    """Extract what ``num_classes`` needs (once) and return the data root (``.../train``,
    ``.../val`` inside). A wrong checksum is a ConfigError and nothing is extracted."""
    if num_classes not in NUM_CLASSES:
        raise ConfigError("data.num_classes", num_classes, NUM_CLASSES)
    src = Path(source_dir or default_source_dir())
    cache = Path(cache_dir or default_cache_dir())
    root = cache / NAME
    root.mkdir(parents=True, exist_ok=True)
    sums = read_checksums(src / "README.md")
    with open(cache / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in archives(num_classes):
            marker = root / f".extracted-{name}"
            if marker.is_file() and marker.read_text().strip() == sums.get(name):
                continue
            archive = src / name
            if not archive.is_file():
                raise ConfigError("data.source_dir", str(src), f"has no {name}")
            if name not in sums:
                raise ConfigError("data.source_dir", str(src), f"README.md lists no checksum for {name}")
            got = sha256_file(archive)
            if got != sums[name]:
                raise ConfigError("data.source_dir", str(archive),
                                  f"sha256 {got} differs from README's {sums[name]}")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(cache, filter="data")
            marker.write_text(sums[name] + "\n")
    return root


def tiny_imagenet_index(split: str, num_classes: int = 200, source_dir: str | Path | None = None,
                        cache_dir: str | Path | None = None) -> FolderIndex:
    """Prepare the data and index ``split`` (``train`` or ``val``) over the first ``num_classes``."""
    if split not in ("train", "val"):
        raise ConfigError("data.split", split, ("train", "val"))
    root = prepare(num_classes, source_dir, cache_dir)
    return scan_folder(root, split, read_classes(source_dir, num_classes))
