"""Label-free data for the search: a fixed probe slice of train and a stream of the rest.

The probe slice (``probe_size`` images drawn with the seed from the *train* split, never the
reported split) scores paths for the board and for the final selection; training batches
and BN recalibration batches come from the remaining train images. Labels never leave
:class:`~archnet.data.sampling.ImagesOnly`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from archnet.data.sampling import ImagesOnly
from archnet.errors import ConfigError


class SearchData:
    """Probe slice (preprocessed, on ``device``) and seeded, cycling train batches."""

    def __init__(self, train_set, preprocess: Callable[[Tensor], Tensor], probe_size: int, seed: int,
                 device: torch.device | str = "cpu", num_workers: int = 0) -> None:
        n = len(train_set)
        if not 0 < probe_size < n:
            raise ConfigError("search.board.probe_size", probe_size, f"an integer in 1..{n - 1} (train has {n})")
        g = torch.Generator().manual_seed(seed * 7919 + 17)
        perm = torch.randperm(n, generator=g)
        images = ImagesOnly(train_set)
        self.preprocess, self.device, self.seed, self.num_workers = preprocess, torch.device(device), seed, num_workers
        self.probe_indices = perm[:probe_size].tolist()
        self.train_set = Subset(images, perm[probe_size:].tolist())
        probe = torch.stack([images[i] for i in self.probe_indices])
        self.probe = preprocess(probe.to(self.device))

    def batches(self, batch_size: int, stream: int = 0) -> Iterator[Tensor]:
        """Endless preprocessed batches (full batches only); ``stream`` picks the seed."""
        if batch_size > len(self.train_set):
            raise ConfigError("search.batch_size", batch_size, f"at most the {len(self.train_set)} train images")
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + stream * 10_007 + epoch)
            loader = DataLoader(self.train_set, batch_size=batch_size, shuffle=True, generator=g,
                                drop_last=True, num_workers=self.num_workers)
            for x in loader:
                yield self.preprocess(x.to(self.device))
            epoch += 1

    def probe_batches(self, batch_size: int) -> Iterator[Tensor]:
        for i in range(0, len(self.probe), batch_size):
            yield self.probe[i:i + batch_size]
