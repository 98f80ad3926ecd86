"""The search configs compose, validate on the meta device, and reject infeasible budgets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archnet.cli.app import CONF_DIR, group_options
from archnet.errors import ConfigError
from archnet.models.resnet import resnet18
from archnet.ops.quant import QuantConfig
from archnet.search.build import build_supernet
from archnet.search.cost import Budget, CostModel
from archnet.search.runner import search_section
from archnet.search.sampler import feasible_sampler

EXPERIMENTS = [e for e in group_options("experiment") if e.startswith("search_")]


def _needs(experiment: str) -> list[str]:
    text = (Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").read_text()
    return [line.split("override /data:")[1].strip() for line in text.splitlines() if "override /data:" in line]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(compose_cfg, experiment, tmp_path, monkeypatch,
                                          data_or_skip):
    missing = [d for d in _needs(experiment) if d not in group_options("data")]
    if missing:
        pytest.skip(f"data config {missing} not written yet")
    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))  # no teacher checkpoint there
    cfg = compose_cfg("search", [f"experiment={experiment}", "teacher.checkpoint=null"])
    s = search_section(cfg)
    assert s.samples >= s.batch_size and s.matcher["_target_"].startswith("archnet.search.matcher.")
    from archnet.cli.search import validate

    with data_or_skip():
        validate(cfg)


@pytest.mark.parametrize("budget", group_options("search/budget"))
@pytest.mark.parametrize("matcher", group_options("search/matcher"))
def test_groups_compose(compose_cfg, budget, matcher):
    cfg = compose_cfg("search", [f"search/budget={budget}", f"search/matcher={matcher}"])
    s = search_section(cfg)
    assert s.budget.name == budget


def test_infeasible_budget_fails_validation(compose_cfg, tmp_path, monkeypatch):
    from archnet.cli.search import validate

    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    cfg = compose_cfg("search", ["search.budget.max=0.1", "teacher.checkpoint=null"])
    with pytest.raises(ConfigError, match="no student path fits"):
        validate(cfg)


@pytest.mark.parametrize("limit,widths", [(1.0, [0.5, 0.75, 1.0]), (0.75, [0.5, 0.75, 1.0]),
                                          (0.5, [0.25, 0.5, 0.75, 1.0])])
def test_tiny_imagenet_resnet18_budgets_are_feasible(limit, widths):
    """The r100 / r75 / r50 experiments' spaces hold paths under their budgets (64 px)."""
    shape = (3, 64, 64)
    with torch.device("meta"):
        teacher = resnet18(num_classes=200).eval()
        net = build_supernet(teacher, QuantConfig(), shape, widths=widths)
        sampler = feasible_sampler(CostModel(net, shape), Budget(0.0, limit, "teacher"), teacher, shape)
    assert sampler.count and sampler.count > 1000
