"""Typed schema of the ``search`` config node (checked before any data or model is built)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archnet.errors import ConfigError
from archnet.search.cost import METRICS, UNITS


def _at_least(node: str, obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise ConfigError(f"{node}.{name}", value, f"a number >= {minimum}")


@dataclass
class SpaceSection:
    n_units: list[int] = field(default_factory=lambda: [1, 2, 3])
    widths: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    shortcut: list[bool] = field(default_factory=lambda: [True, False])
    divisor: int = 8
    max_in_channels: int = 512
    stem: str = "chain"
    head: str = "flatten"


@dataclass
class BudgetSection:
    name: str = "custom"
    min: float = 0.0
    max: float = 1.0
    unit: str = "full"
    metric: str = "macs"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError("search.budget.metric", self.metric, METRICS)
        if self.unit not in UNITS:
            raise ConfigError("search.budget.unit", self.unit, UNITS)


@dataclass
class BoardSection:
    size: int = 4
    gap: float = 5.0
    score: str = "probe"
    probe_size: int = 256
    cache_slice: int = 4

    def __post_init__(self) -> None:
        _at_least("search.board", self, 1, "size", "probe_size", "cache_slice")
        if self.score not in ("probe", "batch"):
            raise ConfigError("search.board.score", self.score, ("probe", "batch"))


@dataclass
class SelectSection:
    random_paths: int = 20
    recal_samples: int = 256

    def __post_init__(self) -> None:
        _at_least("search.select", self, 0, "random_paths")
        _at_least("search.select", self, 1, "recal_samples")


@dataclass
class SearchSection:
    samples: int = 20000
    batch_size: int = 64
    scale: float = 1.0
    warmup_samples: int = 4000
    quant_start_samples: int = 4000
    feat_weight: float = 1.0
    decay: float = 0.8
    kd_tau: float = 1.0
    log_every: int = 20
    num_workers: int = 0
    optimizer: Any = None
    lr_scheduler: Any = None
    space: SpaceSection = field(default_factory=SpaceSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    board: BoardSection = field(default_factory=BoardSection)
    matcher: Any = None
    select: SelectSection = field(default_factory=SelectSection)
    retrain_experiment: str | None = None

    def __post_init__(self) -> None:
        _at_least("search", self, 1, "samples", "batch_size", "log_every")
        _at_least("search", self, 0, "warmup_samples", "quant_start_samples", "num_workers")
        if not self.scale > 0:
            raise ConfigError("search.scale", self.scale, "a number > 0 (budget multiplier)")
        if self.scale != 1.0:  # the training budgets shrink together; at least one step
            self.samples = max(self.batch_size, round(self.samples * self.scale))
            self.warmup_samples = round(self.warmup_samples * self.scale)
            self.quant_start_samples = round(self.quant_start_samples * self.scale)
            self.scale = 1.0
        if not 0 < self.decay <= 1:
            raise ConfigError("search.decay", self.decay, "a number in (0, 1]")
        if not self.kd_tau > 0:
            raise ConfigError("search.kd_tau", self.kd_tau, "a number > 0")
        if self.matcher is None or "_target_" not in self.matcher:
            raise ConfigError("search.matcher", self.matcher, "a matcher config (search/matcher: top1, nearest, meta)")
        need = 2 * int(self.matcher.get("inner_batch", 0) or 0)
        if self.batch_size < max(self.board.cache_slice, need):
            raise ConfigError("search.batch_size", self.batch_size,
                              f"at least the board cache slice ({self.board.cache_slice}) and two meta "
                              f"slices ({need})")
