"""ImageFolderDataModule / TinyImageNetDataModule: splits, manifest, limits, validation."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from archives import write_tar as _tar
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from archnet.data.folder_module import ImageFolderDataModule, TinyImageNetDataModule
from archnet.errors import ConfigError

WNIDS = ["n001", "n002", "n003"]


def _png(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path, n_train: int = 12, n_val: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
            for k in range(n):
                (root / split / wnid / f"{wnid}_{k}.png").write_bytes(_png(rng, 40, 48))
    return root


def module(root: Path, tmp_path: Path, **kw) -> ImageFolderDataModule:
    args = dict(image_size=32, resize=36, num_train=20, holdout=6, cache_dir=tmp_path / "cache",
                batch_size=4)
    return ImageFolderDataModule(root, **{**args, **kw})


def test_splits_manifest_and_shapes(tmp_path):
    dm = module(make_folder(tmp_path / "data"), tmp_path)
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (20, 6, 9)
    x, y = dm.train_set[0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == dm.input_shape == (3, 32, 32)
    assert dm.num_classes == 3 and sorted(set(int(dm.test_set[i][1]) for i in range(9))) == [0, 1, 2]
    m = dm.manifest
    assert not set(m.train) & set(m.holdout)
    path = dm.save_manifest(tmp_path / "run")
    saved = json.loads(path.read_text())
    assert saved["sha256"] == m.sha256 and len(saved["train"]) == 20
    assert dm.save_manifest(tmp_path / "run") == path  # same manifest: fine
    other = module(tmp_path / "data", tmp_path, seed=1)
    other.setup()
    assert other.manifest.sha256 != m.sha256
    with pytest.raises(ConfigError, match="manifest"):
        other.save_manifest(tmp_path / "run")


def test_limits_and_class_subset(tmp_path):
    dm = module(make_folder(tmp_path / "data"), tmp_path, num_train=None, num_classes=2,
                n_train=5, n_val=2, n_test=3)
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (5, 2, 3)
    assert dm.classes == WNIDS[:2]
    assert {int(dm.test_set[i][1]) for i in range(3)} <= {0, 1}
    full = module(tmp_path / "data", tmp_path, num_train=None, holdout=4)
    full.setup()
    assert len(full.train_set) == 3 * 12 - 4  # null: every image outside the held-out slice


def test_constructor_checks_arguments_and_paths_only(tmp_path):
    with pytest.raises(ConfigError, match="data.module.root"):
        module(tmp_path / "missing", tmp_path)
    root = make_folder(tmp_path / "data", n_train=1, n_val=1)
    (root / "train" / WNIDS[0] / "broken.png").write_bytes(b"not an image")
    module(root, tmp_path)  # no decoding before setup()
    for key, value in (("image_size", 0), ("resize", 16), ("holdout", -1), ("num_train", 0),
                       ("max_bad_fraction", 2.0), ("n_test", 0), ("crop_padding", -2)):
        with pytest.raises(ConfigError, match=f"data.module.{key}"):
            module(root, tmp_path, **{key: value})
    node = OmegaConf.create({"_target_": "archnet.data.folder_module.ImageFolderDataModule",
                             "root": str(tmp_path / "nowhere")})
    with pytest.raises(Exception) as err:  # Hydra wraps it; the cause is the ConfigError
        instantiate(node, _recursive_=False)
    assert "data.module.root" in str(err.value)


def test_batch_augment_is_keyed_by_stage_and_step(tmp_path):
    root = make_folder(tmp_path / "data", n_train=1, n_val=1)
    aug = module(root, tmp_path, crop_padding=4).batch_augment(stage=2)
    x = torch.randn(8, 3, 32, 32)
    assert aug(x, 5).shape == x.shape and torch.equal(aug(x, 5), aug(x, 5))
    assert not torch.equal(aug(x, 5), aug(x, 6))
    assert module(root, tmp_path, hflip=False).batch_augment() is None
    flip = module(root, tmp_path).batch_augment()  # hflip only: every image is x or its mirror
    out = flip(x, 0)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x))


def fake_tiny(src: Path) -> Path:
    """A Tiny-ImageNet source folder: 200 wnids, 2 train and 1 val image per class."""
    rng = np.random.default_rng(1)
    src.mkdir(parents=True)
    wnids = [f"n{i:08d}" for i in range(200)]
    (src / "classes.tsv").write_text("".join(f"{w}\tthing\n" for w in wnids))
    img = lambda: _png(rng, 64, 64)  # noqa: E731
    sums = {"train-0.tar.gz": _tar(src / "train-0.tar.gz", {
                f"tiny-imagenet-200/train/{w}/{w}_{k}.JPEG": img() for w in wnids[:100] for k in range(2)}),
            "train-1.tar.gz": _tar(src / "train-1.tar.gz", {
                f"tiny-imagenet-200/train/{w}/{w}_{k}.JPEG": img() for w in wnids[100:] for k in range(2)}),
            "val.tar.gz": _tar(src / "val.tar.gz", {
                f"tiny-imagenet-200/val/{w}/val_{i}.JPEG": img() for i, w in enumerate(wnids)})}
    (src / "README.md").write_text("\n".join(f"    {h}  {n}" for n, h in sums.items()) + "\n")
    return src


def test_tiny_imagenet_100_classes_at_32px(tmp_path):
    src = fake_tiny(tmp_path / "src")
    dm = TinyImageNetDataModule(num_classes=100, image_size=32, source_dir=src, holdout=20,
                                extract_dir=tmp_path / "extract", cache_dir=tmp_path / "cache")
    assert dm.input_shape == (3, 32, 32) and dm.name == "tiny_imagenet"
    assert not (tmp_path / "extract").exists()  # nothing extracted before setup()
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (180, 20, 100)
    assert dm.train_set[0][0].shape == (3, 32, 32) and not (tmp_path / "extract/tiny-imagenet-200/train/n00000150").exists()


def test_tiny_imagenet_validation(tmp_path):
    src = fake_tiny(tmp_path / "src")
    with pytest.raises(ConfigError, match="data.module.num_classes"):
        TinyImageNetDataModule(num_classes=150, source_dir=src)
    with pytest.raises(ConfigError, match="data.module.image_size"):
        TinyImageNetDataModule(image_size=48, source_dir=src)
    with pytest.raises(ConfigError, match="data.module.source_dir"):
        TinyImageNetDataModule(source_dir=tmp_path / "nowhere")
    (src / "val.tar.gz").unlink()
    with pytest.raises(ConfigError, match="val.tar.gz"):
        TinyImageNetDataModule(num_classes=100, source_dir=src)
