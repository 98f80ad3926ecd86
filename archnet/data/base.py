"""What every image data module provides to archnet.

Data sets yield ``(uint8 CHW image, label)``; model input is made on the device, batched,
by :meth:`ImageDataModule.preprocess`: ``(x / 255 - mean) / std``. ``train_set`` is what
distillation draws its label-free samples from, ``holdout_set`` selects checkpoints (a
held-out slice of train, or a val split), ``test_set`` is the reported split.
"""
from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(pl.LightningDataModule):
    """Base class: subclasses fill ``train_set``, ``holdout_set``, ``test_set`` in ``setup``."""

    name: str = "images"
    num_classes: int
    input_shape: tuple[int, int, int]
    train_set: Dataset
    holdout_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 256, num_workers: int = 0,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            from archnet.errors import ConfigError

            raise ConfigError("batch_size", batch_size if batch_size < 1 else eval_batch_size,
                              "a positive integer")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 NCHW batch -> normalised float NCHW on the same device."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float() / 255.0 - mean) / std

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.holdout_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
