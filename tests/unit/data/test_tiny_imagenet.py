"""Tiny-ImageNet preparation: checksums from the README, extraction once, class subsets."""
from __future__ import annotations

from pathlib import Path

import pytest
from archives import write_tar as _tar

from archnet.data import tiny_imagenet as tiny
from archnet.errors import ConfigError

WNIDS = [f"n{i:08d}" for i in range(200)]


def _fake_source(src: Path, corrupt: str | None = None) -> Path:
    src.mkdir(parents=True)
    (src / "classes.tsv").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(WNIDS)))
    sums = {
        "train-0.tar.gz": _tar(src / "train-0.tar.gz", {f"tiny-imagenet-200/train/{w}/a.JPEG": b"x"
                                                        for w in WNIDS[:100]}),
        "train-1.tar.gz": _tar(src / "train-1.tar.gz", {f"tiny-imagenet-200/train/{w}/a.JPEG": b"x"
                                                        for w in WNIDS[100:]}),
        "val.tar.gz": _tar(src / "val.tar.gz", {f"tiny-imagenet-200/val/{w}/v.JPEG": b"x" for w in WNIDS}),
    }
    if corrupt:
        sums[corrupt] = "0" * 64
    lines = "\n".join(f"    {h}  {n}" for n, h in sums.items())
    (src / "README.md").write_text(f"# fake\n\n## Checksums\n\n{lines}\n")
    return src


def test_prepare_100_then_200_classes(tmp_path):
    src = _fake_source(tmp_path / "src")
    root = tiny.prepare(100, src, tmp_path / "cache")
    assert root == tmp_path / "cache" / "tiny-imagenet-200"
    assert not (root / "train" / WNIDS[150]).exists()
    val = tiny.tiny_imagenet_index("val", 100, src, tmp_path / "cache")
    assert val.classes == WNIDS[:100] and len(val) == 100  # val filtered to the subset
    marker = root / ".extracted-train-0.tar.gz"
    stamp = marker.stat().st_mtime_ns
    train = tiny.tiny_imagenet_index("train", 200, src, tmp_path / "cache")
    assert len(train) == 200 and train.labels[150] == 150
    assert marker.stat().st_mtime_ns == stamp  # not extracted again


def test_bad_checksum_extracts_nothing(tmp_path):
    src = _fake_source(tmp_path / "src", corrupt="val.tar.gz")
    with pytest.raises(ConfigError, match="sha256"):
        tiny.prepare(100, src, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-imagenet-200" / "val").exists()
    with pytest.raises(ConfigError, match="num_classes"):
        tiny.prepare(150, src, tmp_path / "cache")


def test_shared_readme_checksums_parse():
    src = tiny.default_source_dir()
    if not (src / "README.md").is_file():
        pytest.skip("shared Tiny-ImageNet not present")
    sums = tiny.read_checksums(src / "README.md")
    assert set(sums) == {"train-0.tar.gz", "train-1.tar.gz", "val.tar.gz", "classes.tsv"}
    assert tiny.sha256_file(src / "classes.tsv") == sums["classes.tsv"]
    assert tiny.read_classes(src, 100)[0] == "n01443537"
