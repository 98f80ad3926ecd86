"""Exactly uniform sampling over the feasible paths ``{p : lo <= fixed + sum_b c_b[p_b] <= hi}``.

Method (exact, no discretisation error): every block cost ``c_bj`` is an integer multiple
of ``g = gcd(all c_bj)``, so with ``u_bj = c_bj / g`` the feasible set is
``{p : L <= sum_b u_b[p_b] <= H}``, ``L = ceil((lo - fixed)/g)``, ``H = floor((hi - fixed)/g)``.
Dynamic programming over the integer partial cost counts suffix completions,

    R_B = [1 at 0],   R_b[t] = sum_j R_{b+1}[t - u_bj],
    F_b(q) = #{suffixes of blocks b.. with L <= q + t <= H} = sum_{t=L-q}^{H-q} R_b[t],

and a path is drawn block by block with ``P(j | prefix cost q) = F_{b+1}(q + u_bj) / F_b(q)``,
which makes every feasible path equally likely (probability ``1 / F_0(0)``). Counts are exact
integers (Python integers past 2^62). When the DP would need more than ``max_bins`` cost
bins, sampling falls back to rejection from the uniform product distribution, which is also
exactly uniform over the feasible set (only slower); the count is then unknown.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
from torch import nn

from archnet.errors import ConfigError
from archnet.search.cost import Budget, CostModel
from archnet.search.space import Path


def _pick(weights: Sequence[int], r: int) -> int:
    """The index ``j`` with ``sum(weights[:j]) <= r < sum(weights[:j+1])``."""
    for j, w in enumerate(weights):
        if r < w:
            return j
        r -= w
    raise ValueError("r outside the total weight")


class FeasibleSampler:
    """Uniform sampler over the paths whose cost lies in ``[lo, hi]`` (module docstring)."""

    def __init__(self, table: Sequence[Sequence[int]], fixed: int, lo: int, hi: int, seed: int = 0,
                 max_bins: int = 4_000_000, max_rejections: int = 200_000) -> None:
        self.table = [list(map(int, r)) for r in table]
        self.fixed, self.lo, self.hi = int(fixed), int(lo), int(hi)
        self.rng = random.Random(seed)
        self.max_rejections = max_rejections
        values = [v for r in self.table for v in r if v]
        self.g = math.gcd(*values) if values else 1
        self.units = [[v // self.g for v in r] for r in self.table]
        self.L = -((self.fixed - self.lo) // self.g)  # ceil((lo - fixed) / g)
        self.H = (self.hi - self.fixed) // self.g
        top = sum(max(r) for r in self.units)
        self.exact = top + 1 <= max_bins
        self.count: int | None = None
        if self.exact:
            self._dp(top)

    def _dp(self, top: int) -> None:
        n_paths = math.prod(len(r) for r in self.units)
        dtype = np.int64 if n_paths < 2**62 else object
        suffix = [np.zeros(1, dtype=dtype) for _ in range(len(self.units) + 1)]
        suffix[-1][0] = 1
        for b in range(len(self.units) - 1, -1, -1):
            nxt = suffix[b + 1]
            cur = np.zeros(len(nxt) + max(self.units[b]), dtype=dtype)
            for u in self.units[b]:
                cur[u:u + len(nxt)] += nxt
            suffix[b] = cur
        self._cum = [np.concatenate([np.zeros(1, dtype=dtype), np.cumsum(r)]) for r in suffix]
        self.count = self._completions(0, 0)

    def _completions(self, b: int, q: int) -> int:
        """``F_b(q)``: feasible completions of blocks ``b..`` after a prefix of cost ``q``."""
        cum = self._cum[b]
        lo, hi = max(0, self.L - q), min(len(cum) - 2, self.H - q)
        return int(cum[hi + 1] - cum[lo]) if hi >= lo else 0

    def feasible(self, path: Path) -> bool:
        return self.lo <= self.cost(path) <= self.hi

    def cost(self, path: Path) -> int:
        return self.fixed + sum(r[j] for r, j in zip(self.table, path))

    def sample(self) -> Path:
        """One feasible path, uniformly (raises ``ValueError`` when none exists)."""
        if not self.exact:
            return self._reject()
        if not self.count:
            raise ValueError("no feasible path")
        path, q = [], 0
        for b, units in enumerate(self.units):
            weights = [self._completions(b + 1, q + u) for u in units]
            j = _pick(weights, self.rng.randrange(sum(weights)))
            path.append(j)
            q += units[j]
        return tuple(path)

    def _reject(self) -> Path:
        for _ in range(self.max_rejections):
            path = tuple(self.rng.randrange(len(r)) for r in self.table)
            if self.feasible(path):
                return path
        raise ValueError(f"no feasible path in {self.max_rejections} uniform draws")

    def samples(self, n: int, distinct: bool = False) -> list[Path]:
        """``n`` draws (``distinct``: without repeats, fewer when the feasible set is smaller)."""
        if not distinct:
            return [self.sample() for _ in range(n)]
        want = n if self.count is None else min(n, self.count)
        seen: dict[Path, None] = {}
        for _ in range(50 * want + 100):
            if len(seen) >= want:
                break
            seen.setdefault(self.sample(), None)
        return list(seen)


def feasible_sampler(model: CostModel, budget: Budget, teacher: nn.Module | None = None,
                     input_shape: tuple[int, int, int] | None = None, seed: int = 0) -> FeasibleSampler:
    """The sampler of ``budget`` over ``model``'s space; :class:`ConfigError` when no path fits."""
    lo, hi = budget.resolve(model, teacher, input_shape)
    metric = budget.metric
    sampler = FeasibleSampler(model.metric_table(metric), model.fixed.get(metric), lo, hi, seed)
    cheapest, dearest = model.bounds(metric)
    empty = hi < cheapest or lo > dearest or sampler.count == 0
    if not empty and not sampler.exact:
        try:
            sampler.sample()
        except ValueError:
            empty = True
    if empty:
        raise ConfigError("search.budget", f"[{budget.min}, {budget.max}] x {budget.unit} {metric}",
                          f"no student path fits [{lo / 1e6:.4g}M, {hi / 1e6:.4g}M] {metric}: paths of this "
                          f"space cost {cheapest / 1e6:.4g}M..{dearest / 1e6:.4g}M (stem + head alone "
                          f"{model.fixed.get(metric) / 1e6:.4g}M); widen the budget or the choices")
    return sampler
