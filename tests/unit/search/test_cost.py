"""The analytic cost table is exact: MACs against the hook count of the exported student,
parameters and BitOPs against the deploy student's layer statistics."""
from __future__ import annotations

import pytest
import torch
from search_helpers import DOREFA, FLOAT, SHAPE, random_paths

from archnet.deploy.fold import deploy_student
from archnet.deploy.stats import layer_stats, totals
from archnet.metrics.complexity import measure
from archnet.models.resnet import resnet18, tiny_resnet
from archnet.search.build import build_supernet
from archnet.search.cost import CostModel


def test_macs_match_hook_count_for_50_random_paths(teacher):
    net = build_supernet(teacher, DOREFA, SHAPE, divisor=4)
    model = CostModel(net, SHAPE)
    paths = random_paths(net.space.sizes, 48, seed=1) + [net.space.largest(), (0,) * 3]
    for path in paths:
        assert model.path_cost(path).macs == measure(net.export(path), SHAPE).macs, path


@pytest.mark.parametrize("quant", [FLOAT, DOREFA], ids=["fp32", "w4a4"])
def test_params_and_bitops_match_deploy_statistics(teacher, quant):
    net = build_supernet(teacher, quant, SHAPE, divisor=4)
    net.set_quantize(True)
    model = CostModel(net, SHAPE)
    for path in random_paths(net.space.sizes, 4, seed=2):
        got = totals(layer_stats(deploy_student(net.export(path).eval()), torch.zeros(1, *SHAPE)))
        want = model.path_cost(path)
        assert (want.macs, want.params, want.bitops) == (got["macs"], got["params"], got["bitops"])


@pytest.mark.parametrize("case", ["odd_size_ceil_pools", "resnet18_64px"])
def test_cost_exact_on_other_geometries(case):
    """36 px: the last block maps 9x9 -> 5x5 (ceil max-pools on the shortcut); ResNet-18 at
    64 px (7x7 stem -> chain stem with two pools, 8 blocks, profile-dropped choices), on the
    meta device (shapes only)."""
    torch.manual_seed(0)
    if case == "odd_size_ceil_pools":
        shape, t, device = (3, 36, 36), tiny_resnet().eval(), "cpu"
    else:
        shape, device = (3, 64, 64), "meta"
        with torch.device("meta"):
            t = resnet18(num_classes=200).eval()
    with torch.device(device):
        net = build_supernet(t, FLOAT, shape)
    model = CostModel(net, shape)
    for path in random_paths(net.space.sizes, 6, seed=3) + [net.space.largest()]:
        with torch.device(device):
            assert model.path_cost(path).macs == measure(net.export(path), shape).macs
    if case == "resnet18_64px":
        assert net.space.blocks[-1].dropped  # shortcut + 512 channels exceed max_in_channels
