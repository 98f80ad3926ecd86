"""Seeded, procedurally generated 10-class images (the embedded default data set).

Classes: 0 disk, 1 square, 2 triangle, 3 plus, 4 ring (shapes); 5-8 gratings at 0, 45, 90
and 135 degrees (orientation); 9 checkerboard (texture). Every image draws foreground and
background colours from the same distribution for all classes, a random position, scale,
phase and additive Gaussian noise, so mean colour carries no class information. Images are
uint8 (N, 32, 32, 3); the same ``(seed, split)`` gives the same bytes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from archnet.data.base import ImageDataModule
from archnet.errors import ConfigError

NUM_CLASSES = 10
CLASS_NAMES = ("disk", "square", "triangle", "plus", "ring",
               "grating0", "grating45", "grating90", "grating135", "checker")
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def _shape_mask(cls: int, xx: np.ndarray, yy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(xx), np.abs(yy)
    if cls == 0:
        return xx**2 + yy**2 <= r**2
    if cls == 1:
        return np.maximum(ax, ay) <= r * 0.85
    if cls == 2:
        return (yy <= r * 0.7) & (yy >= 1.6 * ax - r)
    if cls == 3:
        return ((ax <= r * 0.3) & (ay <= r)) | ((ay <= r * 0.3) & (ax <= r))
    d = np.sqrt(xx**2 + yy**2)
    return (d <= r) & (d >= r * 0.55)


def _texture_mask(cls: int, xx: np.ndarray, yy: np.ndarray, period: float, phase: float) -> np.ndarray:
    if cls == 9:
        return ((np.floor(xx / period + phase) + np.floor(yy / period + phase)) % 2) == 0
    angle = np.deg2rad((cls - 5) * 45 + 0.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    return np.sin(2 * np.pi * u / (2 * period) + phase * 2 * np.pi) > 0


def render(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One image of class ``cls`` as float32 (size, size, 3) in [0, 1]."""
    fg, bg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    while np.abs(fg - bg).sum() < 0.6:  # keep the pattern visible
        fg, bg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    coords = np.arange(size, dtype=np.float32) - (size - 1) / 2
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    if cls < 5:
        cx, cy = rng.uniform(-size / 5, size / 5, 2)
        r = rng.uniform(size / 5, size / 3)
        theta = rng.uniform(-0.3, 0.3)
        x, y = xx - cx, yy - cy
        xr, yr = x * np.cos(theta) - y * np.sin(theta), x * np.sin(theta) + y * np.cos(theta)
        mask = _shape_mask(cls, xr, yr, r)
    else:
        period = rng.uniform(2.0, 5.0)
        jitter = rng.uniform(-0.15, 0.15)
        c, s = np.cos(jitter), np.sin(jitter)
        mask = _texture_mask(cls, xx * c - yy * s, xx * s + yy * c, period, rng.uniform(0, 1))
    img = np.where(mask[..., None], fg, bg).astype(np.float32)
    img += rng.normal(0.0, rng.uniform(0.02, 0.12), img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def generate(n: int, seed: int, split: str = "train", size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x size x size x 3) and labels (int64), balanced over classes."""
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split]])
    labels = np.arange(n, dtype=np.int64) % NUM_CLASSES
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, cls in enumerate(labels):
        images[i] = np.round(render(int(cls), rng, size) * 255).astype(np.uint8)
    return images, labels


class SyntheticDataModule(ImageDataModule):
    """Train/val/test splits of :func:`generate`, held in memory as uint8 tensors."""

    name = "synthetic"
    num_classes = NUM_CLASSES

    def __init__(self, n_train: int = 5000, n_val: int = 1000, n_test: int = 1000,
                 image_size: int = 32, seed: int = 0, **kw) -> None:
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test),
                           ("image_size", image_size)):
            if not isinstance(value, int) or value < (16 if key == "image_size" else 1):
                raise ConfigError(f"data.module.{key}", value,
                                  "an integer >= 16" if key == "image_size" else "a positive integer")
        super().__init__(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=seed, **kw)
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)
        self._ready = False

    def split(self, name: str) -> TensorDataset:
        images, labels = generate(self.sizes[name], self.seed, name, self.image_size)
        return TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                             torch.from_numpy(labels))

    def setup(self, stage: str | None = None) -> None:
        if not self._ready:
            self.train_set, self.holdout_set, self.test_set = (
                self.split(s) for s in ("train", "val", "test"))
            self._ready = True
