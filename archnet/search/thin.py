"""Uniformly thinned students: the baseline a searched path is compared with at equal MACs.

A thinned student gives every block the same choice ``(n_units, w, shortcut)``; one width
factor ``w`` scales all blocks, ``m_b(w) = max(d, d * round(w * C_b / d))`` (``d`` the
divisor), so its cost is

    cost(n, s, w) = fixed + sum_b cost_b(n, m_b(w), s)        (exact, :class:`CostModel`)

which is non-decreasing in ``w``. :func:`thinned_topology` keeps the structure of the
largest path (most units, shortcut on) and lowers ``w`` until the cost matches the target;
when even the narrowest width costs too much it drops a unit, then the shortcut, in that
order, until a structure can reach the target within ``rel_tol``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from archnet.errors import ConfigError
from archnet.search.cost import Cost, CostModel
from archnet.search.space import Choice, round_width


@dataclass(frozen=True)
class Thinned:
    """A uniform choice, its exact cost and the topology document ``student=searched`` reads."""

    n_units: int
    width: float
    shortcut: bool
    cost: Cost

    def topology(self, block_names: Sequence[str], student: Mapping | None = None) -> dict:
        entry = {"n_units": self.n_units, "width": self.width, "shortcut": self.shortcut}
        return {**({"student": dict(student)} if student else {}),
                "blocks": {name: dict(entry) for name in block_names}}


def topology_cost(model: CostModel, blocks: Mapping[str, Mapping] | Sequence[Mapping]) -> Cost:
    """Exact cost of a per-block ``{n_units, width, shortcut}`` topology under ``model``."""
    names = [b.sig.name for b in model.space.blocks]
    entries = [blocks[n] for n in names] if isinstance(blocks, Mapping) else list(blocks)
    if len(entries) != len(names):
        raise ConfigError("topology.blocks", f"{len(entries)} entries", f"one per block ({len(names)})")
    total = model.fixed
    for block, e in zip(model.space.blocks, entries):
        m = round_width(float(e["width"]), block.sig.cout, model.space.divisor)
        total += model.choice_cost(block, Choice(int(e["n_units"]), float(e["width"]), m, bool(e["shortcut"])))
    return total


def uniform_cost(model: CostModel, n_units: int, width: float, shortcut: bool) -> Cost:
    """``fixed + sum_b cost_b`` of the same ``(n_units, width, shortcut)`` in every block."""
    entry = {"n_units": n_units, "width": width, "shortcut": shortcut}
    return topology_cost(model, [entry] * len(model.space.blocks))


def thinned_topology(model: CostModel, target: int, metric: str = "macs", rel_tol: float = 0.03,
                     width_step: float = 0.005, max_width: float = 1.0) -> Thinned:
    """The uniform student whose ``metric`` is closest to ``target`` (module docstring).

    Widths are scanned on ``width_step, 2 width_step, ..., max_width``; the first structure
    (``n_units`` from the space's largest down to 1 with shortcut, then the same without)
    whose closest cost is within ``rel_tol`` of ``target`` wins. Raises :class:`ConfigError`
    when no structure gets that close.
    """
    if target <= 0:
        raise ConfigError("thin.target", target, "a positive cost")
    max_units = max(b.max_units for b in model.space.blocks)
    shortcuts = [s for s in (True, False) if any(c.shortcut == s for b in model.space.blocks for c in b.choices)]
    widths = [round(k * width_step, 6) for k in range(1, int(round(max_width / width_step)) + 1)]
    closest: Thinned | None = None
    for shortcut in shortcuts:
        for n in range(max_units, 0, -1):
            best = min((Thinned(n, w, shortcut, uniform_cost(model, n, w, shortcut)) for w in widths),
                       key=lambda t: (abs(t.cost.get(metric) - target), -t.width))
            if abs(best.cost.get(metric) - target) <= rel_tol * target:
                return best
            if closest is None or abs(best.cost.get(metric) - target) < abs(closest.cost.get(metric) - target):
                closest = best
    assert closest is not None
    raise ConfigError("thin.target", f"{metric} {target:,}", f"a cost a uniform student reaches within "
                      f"{rel_tol:.0%} (closest: {closest.cost.get(metric):,} with n_units {closest.n_units}, "
                      f"width {closest.width}, shortcut {closest.shortcut})")
