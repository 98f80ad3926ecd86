"""The prioritized board: the K best paths seen so far, with cached inputs and outputs.

Cream's insertion rule (reference 2.4), with its bugs fixed (reference 6.3 items 7-8): a
candidate ``(score, cost)`` enters when

1. the board holds fewer than ``size`` entries, or
2. ``score > worst.score + gap``, or
3. ``score > worst.score`` and ``cost < worst.cost``,

where ``worst`` is the last entry. Entries are ordered by ``(score desc, cost asc)`` (ties
then by insertion order) and the board is truncated to ``size``. A path already on the
board is replaced by its new evaluation instead of being listed twice. Each entry keeps
``inputs`` (a few detached images) and ``outputs``: the softmax of **its own** logits on
them, which the matchers compare the current student against.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import Tensor

from archnet.search.space import Path

_counter = itertools.count()


@dataclass
class BoardEntry:
    score: float
    cost: int
    path: Path
    inputs: Tensor | None = None
    outputs: Tensor | None = None
    order: int = field(default_factory=lambda: next(_counter))

    def sort_key(self) -> tuple[float, int, int]:
        return (-self.score, self.cost, self.order)

    def summary(self) -> dict:
        return {"score": self.score, "cost": self.cost, "path": list(self.path)}


class Board:
    """At most ``size`` entries ordered by (score desc, cost asc); see the module docstring."""

    def __init__(self, size: int = 4, gap: float = 5.0) -> None:
        if size < 1:
            raise ValueError(f"board size {size}: must be >= 1")
        self.size, self.gap = int(size), float(gap)
        self.entries: list[BoardEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def worst(self) -> BoardEntry | None:
        return self.entries[-1] if self.entries else None

    def admits(self, score: float, cost: int) -> bool:
        """Cream's rule (module docstring) for a candidate not yet on the board."""
        worst = self.worst
        if worst is None or len(self.entries) < self.size:
            return True
        return score > worst.score + self.gap or (score > worst.score and cost < worst.cost)

    def consider(self, entry: BoardEntry) -> bool:
        """Insert ``entry`` if the rule admits it; returns whether the board changed."""
        same = [e for e in self.entries if e.path == entry.path]
        if same:  # re-evaluated path: keep its latest score and cache
            self.entries.remove(same[0])
            self.entries.append(entry)
        elif self.admits(entry.score, entry.cost):
            self.entries.append(entry)
        else:
            return False
        self.entries.sort(key=BoardEntry.sort_key)
        del self.entries[self.size:]
        return True

    def best(self) -> BoardEntry | None:
        return self.entries[0] if self.entries else None

    def summary(self) -> list[dict]:
        return [e.summary() for e in self.entries]
