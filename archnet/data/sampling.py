"""Deterministic, resumable batch order for a sample budget.

The global sample stream is a concatenation of seeded permutations of the training set
(cycle ``c`` uses ``Generator(seed, stage, c)``). Global step ``g`` consumes stream
positions ``[g*B*W, (g+1)*B*W)``; rank ``r`` takes its ``B`` of them. The stream depends only
on ``(seed, stage)``, so a run resumed at any chunk boundary replays exactly the batches an
uninterrupted run would have seen, and every rank agrees on the order.

Which chunk a pass yields follows the trainer's global step (``step_fn``), not an epoch
counter: Lightning calls ``set_epoch`` only on ``dataloader.sampler`` and
``batch_sampler.sampler``, never on a batch sampler, and after a restore it may replay part
of an epoch it had already finished. ``set_epoch`` remains for use without a trainer.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StageBatchSampler(Sampler[list[int]]):
    """Yields the batches of one chunk (Lightning "epoch") of ``steps_per_chunk`` steps."""

    def __init__(self, n_items: int, total_steps: int, steps_per_chunk: int, batch_size: int,
                 seed: int, stage: int, rank: int = 0, world_size: int = 1,
                 step_fn: Callable[[], int] | None = None) -> None:
        self.n, self.total, self.chunk = n_items, total_steps, steps_per_chunk
        self.batch, self.seed, self.stage = batch_size, seed, stage
        self.rank, self.world = rank, world_size
        self.step_fn = step_fn  # the optimizer steps already taken (e.g. trainer.global_step)
        self.epoch = 0
        self._perms: dict[int, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _perm(self, cycle: int) -> torch.Tensor:
        if cycle not in self._perms:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.stage * 10_007 + cycle) % 2**62)
            self._perms = {cycle: torch.randperm(self.n, generator=g)}
        return self._perms[cycle]

    def _steps_in_epoch(self) -> range:
        """From the current step (``step_fn``, else ``epoch * chunk``) to the chunk's end."""
        start = self.step_fn() if self.step_fn is not None else self.epoch * self.chunk
        return range(start, min((start // self.chunk + 1) * self.chunk, self.total))

    def __len__(self) -> int:
        return len(self._steps_in_epoch())

    def __iter__(self) -> Iterator[list[int]]:
        gb = self.batch * self.world
        for step in self._steps_in_epoch():
            first = step * gb + self.rank * self.batch
            batch = []
            for pos in range(first, first + self.batch):
                batch.append(int(self._perm(pos // self.n)[pos % self.n]))
            yield batch


class ImagesOnly(Dataset):
    """Label-free view of an ``(image, label)`` data set: the label never leaves it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]
