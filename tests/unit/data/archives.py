"""Test helper: write small .tar.gz archives (the Tiny-ImageNet tarball layout)."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path


def write_tar(path: Path, members: dict[str, bytes]) -> str:
    """Write ``members`` ({name: bytes}) into the gzipped tar ``path``; return its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()
