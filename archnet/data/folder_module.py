"""ImageNet-layout data modules: ``<root>/train/<wnid>/*`` and ``<root>/val/<wnid>/*``.

* ``train_set``: the label-free distillation pool, a hashed manifest of ``num_train`` train
  images (:mod:`archnet.data.manifest`; the paper draws 30 000), saved into the run
  directory by :meth:`ImageFolderDataModule.save_manifest`;
* ``holdout_set``: ``holdout`` other train images, for checkpoint selection;
* ``test_set``: the ``val`` folder, the reported split.

Each split is decoded once into a memory-mapped uint8 cache (:mod:`archnet.data.decode_cache`)
at ``resize`` (shorter side resized, centre crop ``resize x resize``) and centre-cropped to
``image_size`` on read: ``resize=256, image_size=224`` is the authors' Resize(256) ->
CenterCrop(224). Train-time randomness (horizontal flip, padded random crop) runs batched on
the device through :meth:`batch_augment`, seeded by ``(seed, stage, step)``.
``n_train``/``n_val``/``n_test`` cap the three splits (``conf/debug/fast.yaml``); only the
kept files are decoded. Constructors validate arguments and check paths exist; nothing is
read before :meth:`setup`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from archnet.data.base import ImageDataModule
from archnet.data.decode_cache import decode_to_cache
from archnet.data.image_folder import FolderIndex, scan_folder
from archnet.data.manifest import FILE_NAME, Manifest, build_manifest
from archnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, random_crop, random_hflip
from archnet.errors import ConfigError

log = logging.getLogger(__name__)


class CenterCropped(Dataset):
    """``(center_crop(x, size), label)`` of an ``(uint8 CHW, label)`` data set."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        x, y = self.dataset[i]
        return center_crop(x, self.size).contiguous(), y


class BatchFlipCrop:
    """Batched train augmentation on the device: zero-padded random crop (``padding`` > 0)
    then horizontal flip with probability 1/2, one draw per image, from a generator seeded by
    ``(seed, stage, step)``. Called without a step (teacher training) it uses its own
    running counter."""

    def __init__(self, padding: int = 0, hflip: bool = True, seed: int = 0, stage: int = 0) -> None:
        self.padding, self.hflip, self.seed, self.stage = padding, hflip, seed, stage
        self.calls = 0

    def __call__(self, x: Tensor, step: int | None = None) -> Tensor:
        if step is None:
            step, self.calls = self.calls, self.calls + 1
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.stage * 10_007 + step) % 2**62)
        if self.padding:
            x = random_crop(x, x.shape[-1], self.padding, generator=g)
        return random_hflip(x, generator=g) if self.hflip else x

    def __repr__(self) -> str:
        return f"BatchFlipCrop(padding={self.padding}, hflip={self.hflip}, stage={self.stage})"


def _positive(key: str, value: Any, minimum: int = 1, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"data.module.{key}", value,
                          f"{'null or ' if optional else ''}an integer >= {minimum}")


class ImageFolderDataModule(ImageDataModule):
    """An ImageNet-layout folder (module docstring). Keys are ``data.module.<name>``.

    Args:
        root: folder holding ``train/`` and ``val/`` class folders.
        image_size: side of the model input (centre crop of the cached ``resize`` image).
        resize: decode size (shorter side, then centre crop); null: ``image_size``.
        num_train: size of the label-free manifest (null: all train images but the holdout).
        holdout: train images held out for checkpoint selection (``holdout_seed`` picks them).
        seed: manifest seed (the run's seed).
        num_classes: keep the first ``num_classes`` sorted class folders (null: all).
        classes: explicit class folder names, in label order.
        cache_dir: where decoded memory maps live.
        max_bad_fraction: undecodable files tolerated per split (skipped), else ConfigError.
        hflip: random horizontal flip in :meth:`batch_augment`.
        crop_padding: zero padding of the random crop in :meth:`batch_augment` (0: no crop).
        n_train: cap on the manifest (smoke runs). n_val: cap on the holdout. n_test: cap on
            the test split (a seeded hash-ranked subset).
        decode_workers: threads decoding JPEGs into the cache.
    """

    name = "image_folder"

    def __init__(self, root: str | Path, image_size: int = 224, resize: int | None = 256,
                 num_train: int | None = 30000, holdout: int = 10000, seed: int = 0,
                 holdout_seed: int = 0, num_classes: int | None = None,
                 classes: Sequence[str] | None = None, cache_dir: str | Path | None = None,
                 max_bad_fraction: float = 0.01, hflip: bool = True, crop_padding: int = 0,
                 n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
                 decode_workers: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 **kw: Any) -> None:
        _positive("image_size", image_size, 8)
        resize = image_size if resize is None else resize
        _positive("resize", resize, image_size)
        _positive("num_train", num_train, optional=True)
        _positive("holdout", holdout, 0)
        _positive("holdout_seed", holdout_seed, 0)
        _positive("num_classes", num_classes, optional=True)
        _positive("crop_padding", crop_padding, 0)
        _positive("decode_workers", decode_workers, 0)
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            _positive(key, value, optional=True)
        if not (isinstance(max_bad_fraction, (int, float)) and 0.0 <= max_bad_fraction <= 1.0):
            raise ConfigError("data.module.max_bad_fraction", max_bad_fraction, "a number in [0, 1]")
        if classes is not None:
            classes = [str(c) for c in classes]
            if num_classes is not None and num_classes != len(classes):
                raise ConfigError("data.module.num_classes", num_classes, f"{len(classes)} (len(classes))")
        super().__init__(mean=mean, std=std, seed=seed, **kw)
        self.root = Path(root) if root is not None else None
        self.image_size, self.resize = image_size, resize
        self.num_train, self.holdout, self.holdout_seed = num_train, holdout, holdout_seed
        self.classes, self.hflip, self.crop_padding = classes, hflip, crop_padding
        self.cache_dir = Path(cache_dir) if cache_dir else Path(".cache") / "decoded"
        self.max_bad_fraction, self.decode_workers = float(max_bad_fraction), decode_workers
        self.limits = {"train": n_train, "val": n_val, "test": n_test}
        self.num_classes = len(classes) if classes is not None else (num_classes or 0)
        self.input_shape = (3, image_size, image_size)
        self.manifest: Manifest | None = None
        self._ready = False
        self.check_paths()

    def check_paths(self) -> None:
        """ConfigError unless ``root`` holds ``train/`` and ``val/`` folders."""
        if self.root is None or not all((self.root / s).is_dir() for s in ("train", "val")):
            raise ConfigError("data.module.root", str(self.root),
                              "an ImageNet-layout folder with train/ and val/ class folders")

    def data_root(self) -> Path:
        """The folder holding ``train/`` and ``val/`` (subclasses may prepare it first)."""
        assert self.root is not None
        return self.root

    def _scan(self, root: Path, split: str, classes: Sequence[str] | None) -> FolderIndex:
        if classes is None and self.num_classes:
            found = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
            if len(found) < self.num_classes:
                raise ConfigError("data.module.num_classes", self.num_classes,
                                  f"at most the {len(found)} class folders of {root / split}")
            classes = found[: self.num_classes]
        return scan_folder(root, split, classes)

    def _decoded(self, index: FolderIndex) -> Dataset:
        data = decode_to_cache(index, self.resize, self.cache_dir, self.max_bad_fraction,
                               self.decode_workers)
        return data if self.resize == self.image_size else CenterCropped(data, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        root = self.data_root()
        train = self._scan(root, "train", self.classes)
        self.classes, self.num_classes = list(train.classes), len(train.classes)
        paths = list(train.paths)
        test = self._scan(root, "val", train.classes)
        n_test = self.limits["test"]
        if n_test is not None and n_test < len(test):
            test = test.select(build_manifest(test.paths, 0, 0, n_test, self.seed).holdout_paths(test.paths))
        holdout = min(self.holdout, self.limits["val"] or self.holdout)
        n = min(self.num_train or len(paths), self.limits["train"] or len(paths), len(paths) - holdout)
        self.manifest = build_manifest(paths, n, self.seed, holdout, self.holdout_seed)
        self.train_set = self._decoded(train.select(self.manifest.train_paths(paths)))
        self.holdout_set = self._decoded(train.select(self.manifest.holdout_paths(paths)))
        self.test_set = self._decoded(test)
        log.info("%s: %d train (manifest %s), %d holdout, %d test images at %dpx", self.name,
                 len(self.train_set), self.manifest.sha256[:12], len(self.holdout_set),
                 len(self.test_set), self.image_size)
        self._ready = True

    def save_manifest(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/manifest.json``; a rerun into the same directory must draw the same
        manifest (ConfigError otherwise)."""
        if self.manifest is None:
            raise RuntimeError("save_manifest() before setup()")
        existing = Path(run_dir) / FILE_NAME
        if existing.is_file():
            old = Manifest.load(run_dir)
            if old.sha256 != self.manifest.sha256:
                raise ConfigError("data.module", f"manifest {self.manifest.sha256[:12]}",
                                  f"the run directory's manifest ({old.sha256[:12]}): same data, seed "
                                  "and num_train as the interrupted run")
            return existing
        return self.manifest.save(run_dir)

    def batch_augment(self, stage: int = 0) -> BatchFlipCrop | None:
        """The training augmentation hook ``f(x, step)`` of stage ``stage`` (None when off)."""
        if not self.hflip and not self.crop_padding:
            return None
        return BatchFlipCrop(self.crop_padding, self.hflip, self.seed, stage)


class TinyImageNetDataModule(ImageFolderDataModule):
    """Tiny-ImageNet-200 (64 px, ImageNet layout) from the shared tarballs.

    ``num_classes`` 100 (``train-0.tar.gz`` only; val filtered to those classes) or 200;
    ``image_size`` 64 (native) or 32 (decoded at 32). :func:`archnet.data.tiny_imagenet.prepare`
    verifies the archives' checksums and extracts them once into ``extract_dir`` (default
    ``<repo>/.cache/data``, git-ignored) when :meth:`setup` runs.
    """

    name = "tiny_imagenet"

    def __init__(self, num_classes: int = 200, image_size: int = 64,
                 source_dir: str | Path | None = None, extract_dir: str | Path | None = None,
                 num_train: int | None = None, holdout: int = 2000, **kw: Any) -> None:
        from archnet.data import tiny_imagenet as tiny

        if num_classes not in tiny.NUM_CLASSES:
            raise ConfigError("data.module.num_classes", num_classes, tiny.NUM_CLASSES)
        if image_size not in (32, 64):
            raise ConfigError("data.module.image_size", image_size, (32, 64))
        self.source_dir = Path(source_dir) if source_dir else tiny.default_source_dir()
        self.extract_dir = Path(extract_dir) if extract_dir else tiny.default_cache_dir()
        super().__init__(root=self.extract_dir / tiny.NAME, image_size=image_size, resize=image_size,
                         num_train=num_train, holdout=holdout, num_classes=num_classes, **kw)

    def check_paths(self) -> None:
        """ConfigError unless the source folder holds README.md, classes.tsv and the archives."""
        from archnet.data import tiny_imagenet as tiny

        needed = ("README.md", "classes.tsv", *tiny.archives(self.num_classes))
        missing = [n for n in needed if not (self.source_dir / n).is_file()]
        if missing:
            raise ConfigError("data.module.source_dir", str(self.source_dir),
                              f"a Tiny-ImageNet folder with {', '.join(missing)}")

    def data_root(self) -> Path:
        from archnet.data import tiny_imagenet as tiny

        self.classes = tiny.read_classes(self.source_dir, self.num_classes)
        return tiny.prepare(self.num_classes, self.source_dir, self.extract_dir)
