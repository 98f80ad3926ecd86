"""Weight sharing is consistent: supernet(x, path) == export(path)(x) in eval mode, float and
fake-quant; exported students are Arch-Net-only and pass the ``archnet`` profile."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from search_helpers import DOREFA, DOREFA_CHANNEL, FLOAT, LSQ, SHAPE, random_paths
from torch import nn

from archnet.models.resnet import tiny_resnet
from archnet.models.student import ArchBlock, ArchNetStudent, Head
from archnet.ops.layers import QConv2d, QLinear
from archnet.ops.units import ConcatMerge, ConvUnit
from archnet.search.build import build_supernet


def trained(teacher, quant, shape=SHAPE, steps=6):
    """A supernet after a few SGD steps on random paths: BN statistics and LSQ steps set."""
    torch.manual_seed(1)
    net = build_supernet(teacher, quant, shape, divisor=4).train()
    net.set_quantize(not quant.is_float)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for path in random_paths(net.space.sizes, steps, seed=5):
        loss = net(torch.randn(8, *shape), path).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # make every switchable statistic and step size distinct
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            if hasattr(m, "alpha"):
                m.alpha.mul_(torch.empty_like(m.alpha).uniform_(0.7, 1.3))
    return net.eval()


@pytest.mark.parametrize("quant", [FLOAT, DOREFA, DOREFA_CHANNEL, LSQ],
                         ids=["fp32", "dorefa_fixed", "dorefa_channel_fixed", "lsq"])
def test_supernet_equals_exported_student(teacher, quant):
    net = trained(teacher, quant)
    x = torch.randn(6, *SHAPE)
    paths = random_paths(net.space.sizes, 8, seed=7) + [net.space.largest(), (0, 0, 0)]
    for path in paths:
        student = net.export(path).eval()
        assert student.tap_names == net.tap_names == teacher.tap_names
        with torch.no_grad():
            a, b = net.forward_taps(x, path), student.forward_taps(x)
            assert torch.allclose(net(x, path), student(x), atol=1e-5, rtol=0)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (path, k)


def test_equivalence_with_ceil_pooling():
    torch.manual_seed(0)
    shape = (3, 36, 36)
    net = trained(tiny_resnet().eval(), DOREFA, shape)
    x = torch.randn(4, *shape)
    for path in random_paths(net.space.sizes, 4, seed=8):
        with torch.no_grad():
            assert torch.allclose(net(x, path), net.export(path).eval()(x), atol=1e-5, rtol=0)


def test_quantization_switch_changes_the_function(teacher):
    net = trained(teacher, DOREFA)
    path, x = net.space.largest(), torch.randn(4, *SHAPE)
    with torch.no_grad():
        q = net(x, path)
        net.set_quantize(False)
        f = net(x, path)
        assert not torch.allclose(q, f)
        assert torch.allclose(f, net.export(path).eval()(x), atol=1e-5, rtol=0)


ALLOWED = (ArchNetStudent, ArchBlock, ConvUnit, ConcatMerge, Head, QConv2d, QLinear, nn.BatchNorm2d,
           nn.MaxPool2d, nn.ReLU, nn.Sequential, nn.ModuleList, nn.Identity)


def test_exported_students_use_arch_net_modules_only(teacher):
    net = trained(teacher, DOREFA)
    for path in random_paths(net.space.sizes, 10, seed=9) + [net.space.largest(), (0, 0, 0)]:
        for name, m in net.export(path).named_modules():
            quantizer = type(m).__module__.startswith("archnet.ops.")
            assert isinstance(m, ALLOWED) or quantizer, (name, type(m))
            if isinstance(m, nn.Conv2d):
                assert m.kernel_size == (3, 3) and m.padding == (1, 1) and m.groups == 1
            if isinstance(m, nn.MaxPool2d):
                assert m.kernel_size == 2 and m.stride == 2


def test_exported_student_passes_the_archnet_profile(teacher, tmp_path):
    from archnet.deploy.export import export_student

    net = trained(teacher, DOREFA)
    out = export_student(net.export(net.space.largest()).eval(), tmp_path, torch.randn(2, *SHAPE), "archnet", DOREFA)
    assert out["verdict"] == "pass", out["violations"]


@pytest.mark.parametrize("quant,scale", [(FLOAT, 1.0), (DOREFA, 0.1), (LSQ, 1.0)], ids=["fp32", "dorefa_fixed", "lsq"])
def test_tap_scale_puts_quantized_taps_in_bn_units(teacher, quant, scale):
    """A fixed-range unit outputs round(clip(0.1 y, 0, 1) M) / M, so tap / tap_scale is
    relu(y) to within half a grid step (10 / (2 M) BN units) inside the range [0, 10]; LSQ
    keeps the BN units (its grid step alpha)."""
    net = trained(teacher, quant)
    assert net.tap_scale == pytest.approx(scale)
    net.set_quantize(False)
    assert net.tap_scale == 1.0
    net.set_quantize(not quant.is_float)
    unit = net.stem[0]
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        tap = unit(x, "full")
        w = unit.wq["full"](unit.weight) if net.quantize else unit.weight
        y = F.relu(unit.bn["full"](F.conv2d(x, w, None, unit.stride, 1)))
    levels = 2**quant.act.bits - 1
    if quant is LSQ:
        step = float(unit.act["full"].alpha.detach().abs().max())
    else:
        step = 1.0 / (scale * levels) if net.quantize else 0.0
    inside = y < (levels * step if net.quantize else float("inf"))
    assert inside.float().mean() > 0.9
    err = (tap / net.tap_scale - y)[inside].abs().max()
    assert float(err) <= 0.5 * step + 1e-5


def test_search_loss_compares_features_in_bn_units():
    from archnet.search.loss import search_loss

    torch.manual_seed(0)
    t = {"stem": torch.rand(4, 8, 5, 5) * 5, "logits": torch.randn(4, 10)}
    s = {"stem": 0.1 * t["stem"], "logits": t["logits"].clone()}
    _, scaled = search_loss(s, t, ["stem"], feature_scale=0.1)
    _, raw = search_loss(s, t, ["stem"])
    assert scaled["feature"] == pytest.approx(0.0, abs=1e-10)
    assert raw["feature"] == pytest.approx(float((0.9 * t["stem"]).square().mean()), rel=1e-5)


def test_start_quantization_keeps_the_logit_scale(teacher):
    """Fixed-range units output 0.1x their float values; folding 1/0.1 into the head keeps the
    logits' spread (batch statistics, so BN absorbs the weight quantization everywhere else)."""
    net = trained(teacher, DOREFA).train()
    net.set_quantize(False)  # the float phase of a search
    x, path = torch.randn(32, *SHAPE), net.space.largest()
    plain = copy.deepcopy(net)
    with torch.no_grad():
        z_float = net(x, path)
        plain.set_quantize(True)
        net.start_quantization()
        net.start_quantization()  # idempotent: the fold happens once
        ratio_plain = float(plain(x, path).std() / z_float.std())
        ratio_fold = float(net(x, path).std() / z_float.std())
    assert net.tap_scale == pytest.approx(0.1)
    assert torch.allclose(net.head.weight, plain.head.weight / 0.1)
    assert ratio_plain < 0.3
    assert 0.5 < ratio_fold < 2.0
