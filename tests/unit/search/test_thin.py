"""Uniformly thinned students: the cost the thinning reports is the built student's hook
count, it lands within tolerance of the target, and structure is kept before it is dropped."""
from __future__ import annotations

import pytest
from search_helpers import DOREFA, SHAPE, random_paths

from archnet.errors import ConfigError
from archnet.metrics.complexity import measure
from archnet.search.build import build_supernet
from archnet.search.cost import CostModel
from archnet.search.student import searched_student
from archnet.search.thin import thinned_topology, topology_cost, uniform_cost

STUDENT = {"divisor": 4, "max_in_channels": 512, "stem": "chain", "head": "flatten"}


@pytest.fixture(scope="module")
def model(teacher) -> CostModel:
    return CostModel(build_supernet(teacher, DOREFA, SHAPE, divisor=4), SHAPE)


@pytest.mark.parametrize("choice", [(3, 1.0, True), (2, 0.42, True), (1, 0.3, False)])
def test_uniform_cost_is_the_hook_count_of_the_built_student(teacher, model, choice):
    n, w, s = choice
    topo = {"student": STUDENT, "blocks": [{"n_units": n, "width": w, "shortcut": s}] * len(model.space.blocks)}
    student = searched_student(teacher, DOREFA, SHAPE, topology=topo)
    assert uniform_cost(model, n, w, s).macs == measure(student, SHAPE).macs


def test_topology_cost_equals_path_cost(model):
    for path in random_paths(model.space.sizes, 10, seed=4):
        assert topology_cost(model, model.space.to_topology(path)["blocks"]) == model.path_cost(path)


@pytest.mark.parametrize("fraction", [1.0, 0.8, 0.6, 0.4])
def test_thinned_student_matches_the_target(teacher, model, fraction):
    full = model.path_cost(model.space.largest()).macs
    target = int(fraction * full)
    thin = thinned_topology(model, target, rel_tol=0.03)
    assert abs(thin.cost.macs - target) <= 0.03 * target
    assert thin.width <= 1.0
    if fraction == 1.0:  # the largest structure reaches it: no unit or shortcut dropped
        assert (thin.n_units, thin.shortcut) == (3, True)
    doc = thin.topology(model.space.names, STUDENT)
    assert len({str(e) for e in doc["blocks"].values()}) == 1  # one choice for every block
    assert measure(searched_student(teacher, DOREFA, SHAPE, topology=doc), SHAPE).macs == thin.cost.macs


def test_structure_is_dropped_only_when_needed(model):
    """A target under what three units with the shortcut cost at the narrowest width drops
    units first (n_units < 3), and the result is the closest cost of that structure."""
    floor3 = uniform_cost(model, 3, 0.005, True).macs
    thin = thinned_topology(model, int(floor3 * 0.9), rel_tol=0.03)
    assert (thin.n_units, thin.shortcut) != (3, True)
    assert abs(thin.cost.macs - int(floor3 * 0.9)) <= 0.03 * floor3 * 0.9


def test_unreachable_target_is_a_config_error(model):
    with pytest.raises(ConfigError, match="thin.target"):
        thinned_topology(model, 10, rel_tol=0.01)
    with pytest.raises(ConfigError, match="positive"):
        thinned_topology(model, 0)
