"""Exact uniform sampling over feasible paths; budgets; infeasible budgets."""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from search_helpers import FLOAT, SHAPE

from archnet.errors import ConfigError
from archnet.search.build import build_supernet
from archnet.search.cost import Budget, CostModel
from archnet.search.sampler import FeasibleSampler, feasible_sampler

TABLE = [[3, 5, 8, 13], [2, 4, 4, 9, 11], [1, 6, 7]]  # repeated cost 4: two distinct paths


def brute_force(table, fixed, lo, hi):
    return [p for p in itertools.product(*(range(len(r)) for r in table))
            if lo <= fixed + sum(r[j] for r, j in zip(table, p)) <= hi]


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: p = 0.999)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(samples, support) -> float:
    counts = Counter(samples)
    expected = len(samples) / len(support)
    return sum((counts.get(p, 0) - expected) ** 2 / expected for p in support)


@pytest.mark.parametrize("max_bins", [10_000, 1])  # exact DP, and the rejection fallback
def test_uniform_over_feasible_set(max_bins):
    fixed, lo, hi = 10, 22, 30
    support = brute_force(TABLE, fixed, lo, hi)
    s = FeasibleSampler(TABLE, fixed, lo, hi, seed=123, max_bins=max_bins)
    assert s.exact == (max_bins > 1)
    if s.exact:
        assert s.count == len(support)
    draws = [s.sample() for _ in range(200 * len(support))]
    assert set(draws) <= set(support) and set(draws) == set(support)
    assert chi2(draws, support) < chi2_critical(len(support) - 1)


def test_chi_square_rejects_a_biased_sampler():
    """Control: choosing each block uniformly among choices that keep a completion possible is
    *not* uniform over paths, and the same test catches it."""
    fixed, lo, hi = 10, 22, 30
    support = brute_force(TABLE, fixed, lo, hi)
    rng = random.Random(1)

    def biased():
        prefix = ()
        for b in range(len(TABLE)):
            ok = [j for j in range(len(TABLE[b])) if any(p[:b + 1] == prefix + (j,) for p in support)]
            prefix += (rng.choice(ok),)
        return prefix

    draws = [biased() for _ in range(200 * len(support))]
    assert chi2(draws, support) > chi2_critical(len(support) - 1)


def test_supernet_budget_samples_are_feasible_and_counted(teacher):
    net = build_supernet(teacher, FLOAT, SHAPE, divisor=4)
    model = CostModel(net, SHAPE)
    s = feasible_sampler(model, Budget(0.35, 0.5, "full"), seed=0)
    lo, hi = s.lo, s.hi
    full = model.path_cost(net.space.largest()).macs
    assert (lo, hi) == (math.ceil(0.35 * full), int(0.5 * full))
    support = [p for p in net.space.enumerate() if lo <= model.path_cost(p).macs <= hi]
    assert s.count == len(support) > 0
    for p in s.samples(300):
        assert lo <= model.path_cost(p).macs <= hi


def test_large_space_counts_with_python_integers():
    table = [[1, 2, 3, 5, 8, 13, 21, 34, 55]] * 22  # 9^22 > 2^62 paths
    s = FeasibleSampler(table, 0, 200, 300, seed=0)
    assert s.exact and s.count > 2**62 // 10**6
    assert all(200 <= s.cost(p) <= 300 for p in s.samples(20))


@pytest.mark.parametrize("budget", [Budget(0.0, 0.2, "full"), Budget(0.0, 0.01, "teacher"),
                                    Budget(20, 30, "absolute")])
def test_infeasible_budget_is_a_config_error(teacher, budget):
    net = build_supernet(teacher, FLOAT, SHAPE, divisor=4)
    with pytest.raises(ConfigError, match="no student path fits"):
        feasible_sampler(CostModel(net, SHAPE), budget, teacher, SHAPE)


def test_budget_validation():
    with pytest.raises(ConfigError):
        Budget(0.6, 0.5)
    with pytest.raises(ConfigError):
        Budget(0, 1, unit="teacher", metric="bitops")
