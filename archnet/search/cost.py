"""Analytic cost of supernet paths: MACs, deploy parameters and BitOPs (reference 7.3).

Per 3x3 conv with ``C_in -> C_out`` channels and output ``H x W``, as the deploy student
counts them (:mod:`archnet.deploy.stats`, :mod:`archnet.metrics.complexity`):

    MACs = H W C_in C_out 9,   params = 9 C_in C_out + C_out (BN folded into a bias),
    BitOPs = MACs * w_bits * a_bits   (a_bits of the conv's *input*: 32 for the image)

and for the classifier ``params = F K + K`` with ``MACs = F K`` (``F = C H W`` for a
``flatten`` head, ``C`` for ``gap``, whose pooled input is float). Pools and concat cost
nothing. A path costs ``fixed (stem + head) + sum_b table[b][path[b]]``; the table is
exact (tests compare it with the hook count of the exported student).

A :class:`Budget` is ``[min, max]`` in ``unit``: ``full`` (fraction of the largest path),
``teacher`` (fraction of the teacher's MACs or parameters) or ``absolute`` (millions).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from archnet.errors import ConfigError
from archnet.ops.quant import FLOAT_BITS, QuantConfig, head_weight_config
from archnet.search.slim import SlimUnit
from archnet.search.space import BlockSpace, Choice, Path
from archnet.search.supernet import SuperNet

METRICS = ("macs", "params", "bitops")
UNITS = ("full", "teacher", "absolute")


@dataclass(frozen=True)
class Cost:
    macs: int = 0
    params: int = 0
    bitops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.params + other.params, self.bitops + other.bitops)

    def get(self, metric: str) -> int:
        return getattr(self, metric)


def conv_cost(cin: int, cout: int, hw: tuple[int, int], w_bits: int, a_bits: int) -> Cost:
    macs = hw[0] * hw[1] * cin * cout * 9
    return Cost(macs, 9 * cin * cout + cout, macs * w_bits * a_bits)


def _conv_hw(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)


def _pool_hw(hw: tuple[int, int], ceil: bool) -> tuple[int, int]:
    return (-(-hw[0] // 2), -(-hw[1] // 2)) if ceil else (hw[0] // 2, hw[1] // 2)


class CostModel:
    """``fixed`` cost and ``table[b][j]`` of choice ``j`` of block ``b`` for one supernet."""

    def __init__(self, net: SuperNet, input_shape: tuple[int, int, int]) -> None:
        q: QuantConfig = net.quant
        self.w_bits = FLOAT_BITS if q.weight.is_float else q.weight.bits
        self.a_bits = FLOAT_BITS if q.act.is_float else q.act.bits
        hw = tuple(input_shape[1:])
        fixed, a_bits = Cost(), FLOAT_BITS
        for m in net.stem:
            if isinstance(m, SlimUnit):
                hw = _conv_hw(hw, m.stride)
                w_bits = self.w_bits if m.quantize_weight else FLOAT_BITS
                fixed += conv_cost(m.cin, m.cout, hw, w_bits, a_bits)
                a_bits = self.a_bits
            elif isinstance(m, nn.MaxPool2d):
                hw = _pool_hw(hw, m.ceil_mode)
        head = net.head
        feats = head.channels * (1 if head.kind == "gap" else head.spatial[0] * head.spatial[1])
        hq = head_weight_config(q)
        head_w = FLOAT_BITS if hq.is_float else hq.bits
        head_a = FLOAT_BITS if head.kind == "gap" else self.a_bits
        k = head.num_classes
        self.fixed = fixed + Cost(feats * k, feats * k + k, feats * k * head_w * head_a)
        self.table = [[self.choice_cost(b, c) for c in b.choices] for b in net.space.blocks]
        self.space = net.space

    def choice_cost(self, block: BlockSpace, c: Choice) -> Cost:
        sig, wb, ab = block.sig, self.w_bits, self.a_bits
        hw = _conv_hw(sig.in_size, 2 if sig.stride > 1 else 1)
        total = conv_cost(sig.cin, c.m, hw, wb, ab)
        for _ in range(sig.log_stride - 1):
            hw = _pool_hw(hw, sig.ceil_pool)
        for _ in range(c.n_units - 1):
            total += conv_cost(c.m, c.m, hw, wb, ab)
        return total + conv_cost(c.m + (sig.cin if c.shortcut else 0), sig.cout, hw, wb, ab)

    def path_cost(self, path: Path) -> Cost:
        self.space.check(path)
        total = self.fixed
        for row, j in zip(self.table, path):
            total += row[j]
        return total

    def metric_table(self, metric: str) -> list[list[int]]:
        return [[c.get(metric) for c in row] for row in self.table]

    def bounds(self, metric: str) -> tuple[int, int]:
        """Cheapest and dearest path cost."""
        t = self.metric_table(metric)
        f = self.fixed.get(metric)
        return f + sum(min(r) for r in t), f + sum(max(r) for r in t)


@dataclass
class Budget:
    """``[min, max]`` of ``metric`` in ``unit`` (module docstring)."""

    min: float = 0.0
    max: float = 1.0
    unit: str = "full"
    metric: str = "macs"
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError("search.budget.metric", self.metric, METRICS)
        if self.unit not in UNITS:
            raise ConfigError("search.budget.unit", self.unit, UNITS)
        if not 0 <= self.min <= self.max:
            raise ConfigError("search.budget", [self.min, self.max], "0 <= min <= max")
        if self.unit == "teacher" and self.metric == "bitops":
            raise ConfigError("search.budget.unit", self.unit, "full or absolute for bitops")

    def resolve(self, model: CostModel, teacher: nn.Module | None = None,
                input_shape: tuple[int, int, int] | None = None) -> tuple[int, int]:
        """Absolute ``(lo, hi)`` in ``metric`` units."""
        if self.unit == "absolute":
            ref = 1e6
        elif self.unit == "full":
            ref = model.path_cost(model.space.largest()).get(self.metric)
        else:
            if teacher is None or input_shape is None:
                raise ConfigError("search.budget.unit", "teacher", "a teacher to measure")
            from archnet.metrics.complexity import measure

            m = measure(teacher, input_shape)
            ref = m.macs if self.metric == "macs" else m.params
        return int(-(-self.min * ref // 1)), int(self.max * ref // 1)

    def describe(self, lo: int, hi: int) -> str:
        return f"{self.name}: {self.metric} in [{lo / 1e6:.3f}M, {hi / 1e6:.3f}M] ({self.min}..{self.max} x {self.unit})"
