"""Thinner blocks (``student.inner_width``, archnet.convert.prune) and the least-squares
refit of calibration (``distill.calibrate_refit``, archnet.convert.calibrate.refit_conv)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from resnet_teachers import SHAPE, assert_calibrated_student_is_the_teacher, teacher_of
from torch import nn

from archnet.convert.calibrate import calibrate_student, refit_conv
from archnet.convert.prune import kept_count, prune_inner, relu_rms
from archnet.convert.resnet import convert_resnet
from archnet.errors import ConfigError
from archnet.metrics.complexity import count_macs
from archnet.ops.layers import QConv2d
from archnet.ops.lsq import LsqWeight
from archnet.ops.quant import QuantConfig
from archnet.ops.units import concat_slices


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (1.5, 0.5), (-1.0, 2.0), (-3.0, 0.3)])
def test_relu_rms_is_the_root_mean_square_of_relu_z(mean: float, std: float) -> None:
    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.bias.fill_(mean)
        bn.weight.fill_(-std)  # the sign of gamma does not matter
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * std + mean
    expected = float(F.relu(z).pow(2).mean().sqrt())
    assert float(relu_rms(bn)) == pytest.approx(expected, rel=1e-2, abs=1e-6)


def test_kept_count_rounds_to_the_divisor_within_bounds() -> None:
    assert [kept_count(64, f, 4) for f in (0.4, 0.5, 0.01, 1.0)] == [24, 32, 4, 64]
    assert kept_count(16, 0.45, 4) == 8 and kept_count(6, 0.5, 8) == 6 and kept_count(10, 0.3) == 3


def kill_inner_channels(teacher: nn.Module, fraction: float) -> None:
    """Make all but the first ``fraction`` of every inner channel dead (relu(bn) == 0)."""
    with torch.no_grad():
        for _, block in teacher.blocks():
            for i in (1, 2) if hasattr(block, "conv3") else (1,):
                bn = getattr(block, f"bn{i}")
                dead = slice(round(fraction * bn.num_features), None)
                bn.weight[dead] = 1e-3
                bn.bias[dead] = -50.0


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_dead_channels_go_first_and_the_pruned_block_is_the_teacher_block(kind: str) -> None:
    teacher = teacher_of(kind)
    kill_inner_channels(teacher, 0.5)
    x = torch.randn(16, 8, 8, 8)
    _, block = next(iter(teacher.blocks()))
    width = block.conv1.out_channels
    pruned, kept = prune_inner(block, 0.5, divisor=4)
    assert len(kept) == (2 if kind == "bottleneck" else 1)
    for idx, bn in zip(kept, (block.bn1, block.bn2)):
        assert idx.tolist() == list(range(bn.num_features // 2))  # the live half, ascending
    assert pruned.conv1.out_channels == block.conv1.out_channels // 2
    with torch.no_grad():
        assert torch.allclose(pruned(x), block(x), atol=1e-6)
    assert block.conv1.out_channels == width  # the teacher is untouched


@pytest.mark.parametrize("kind, rules", [
    ("basic", {"fold_add": True}), ("basic", {"init_merge_as_add": True}),
    ("bottleneck", {"fold_add": True}), ("bottleneck", {"init_merge_as_add": True})])
def test_pruned_student_of_dead_channels_computes_the_teacher(kind: str, rules: dict) -> None:
    """Dropping only dead channels loses nothing: calibrated, the thin float student computes
    every tap it keeps; it keeps the taps of full width only."""
    teacher = teacher_of(kind)
    kill_inner_channels(teacher, 0.5)
    student = convert_resnet(teacher, QuantConfig(), SHAPE, init_preadd_shift=10.0, inner_width=0.5,
                             inner_divisor=2, **rules)
    assert_calibrated_student_is_the_teacher(student, teacher)
    last = "conv3" if kind == "bottleneck" else "conv2"
    per_block = ["out"] if rules.get("fold_add") else [last, "out"]
    blocks = [name for name, _ in teacher.blocks()]
    assert student.tap_names == ["stem", *[f"{b}.{s}" for b in blocks for s in per_block], "logits"]
    full = convert_resnet(teacher, QuantConfig(), SHAPE, init_preadd_shift=10.0, **rules)
    assert count_macs(student, SHAPE) < count_macs(full, SHAPE)


def test_one_inner_width_per_block() -> None:
    """A list prunes each block by its own width: each block is the block of the student built
    with that width for every block."""
    teacher = teacher_of("basic")
    names = [name for name, _ in teacher.blocks()]
    widths = [0.5, 0.25]
    assert len(names) == 2
    mixed = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, inner_width=widths, inner_divisor=2)
    for i, w in enumerate(widths):
        uniform = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, inner_width=w, inner_divisor=2)
        got, want = mixed.body[i], uniform.body[i]
        assert [u.conv.out_channels for u in got.main] == [u.conv.out_channels for u in want.main]
        assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    assert [u.conv.out_channels for b in mixed.body for u in b.main] == [
        teacher_block.conv1.out_channels * w for (_, teacher_block), w in zip(teacher.blocks(), widths)]


@pytest.mark.parametrize("parts, limit, slices", [
    ((64, 64, 64), 128, 1), ((512, 512, 512), 512, 2), ((128, 512, 512), 512, 2),
    ((384, 384, 384), 512, 2), ((52, 128, 128), 128, 2), ((48, 128, 128), 64, 4)])
def test_concat_slices(parts: tuple[int, int, int], limit: int, slices: int) -> None:
    n = concat_slices(*parts, limit)
    assert n == slices and all(c % n == 0 for c in parts) and (parts[0] + parts[1]) // n <= limit


@pytest.mark.parametrize("parts, limit", [((51, 128, 128), 128), ((128, 256, 128), 256)])
def test_concat_that_cannot_be_sliced(parts: tuple[int, int, int], limit: int) -> None:
    with pytest.raises(ValueError, match="cannot slice"):
        concat_slices(*parts, limit)


def test_refit_recovers_a_conv_and_resets_its_lsq_step() -> None:
    g = torch.Generator().manual_seed(0)
    w_star = torch.randn(5, 6, 3, 3, generator=g)
    x = torch.randn(64, 6, 8, 8, generator=g)
    target = F.conv2d(x, w_star, padding=1) + 0.7  # the offset is the BN's to absorb
    conv = QConv2d(6, 5, 3, 1, 1, bias=False, weight_quantizer=LsqWeight(4, per_channel=True, init="mse"))
    conv.train()(x)  # the step is set on the random initial weights
    old_step = conv.weight_quantizer.alpha.detach().clone()
    refit_conv(conv, x, target, ridge=1e-9)
    assert torch.allclose(conv.weight, w_star, atol=1e-4)
    fresh = LsqWeight(4, per_channel=True, init="mse").train()
    fresh(w_star)
    assert torch.allclose(conv.weight_quantizer.alpha, fresh.alpha, rtol=1e-4)
    assert not torch.allclose(conv.weight_quantizer.alpha, old_step)


def test_refit_lowers_the_merge_error_of_a_pruned_student() -> None:
    """Same inputs to the first merge with and without the refit: its least-squares weights
    cannot do worse than a per-channel scale of the rules' weights."""
    teacher = teacher_of("basic")
    x = torch.randn(256, *SHAPE, generator=torch.Generator().manual_seed(1))
    errors = {}
    for refit in (False, True):
        student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, init_preadd_shift=3.0,
                                 inner_width=0.5, inner_divisor=2)
        errors[refit] = calibrate_student(student, teacher, x, refit=refit)
    assert errors[False][0] > 0.05
    assert errors[True][0] < 0.8 * errors[False][0]


@pytest.mark.parametrize("rules, key", [
    ({"inner_width": 0.0}, "student.inner_width"), ({"inner_width": 1.5}, "student.inner_width"),
    ({"inner_width": 0.5, "inner_divisor": 0}, "student.inner_divisor"),
    ({"inner_width": 0.5, "r50_layer2_bug": True}, "student.inner_width"),
    ({"inner_width": [0.5]}, "student.inner_width"), ({"inner_width": [0.5, 0.5, 0.5]}, "student.inner_width"),
    ({"inner_width": "0.5"}, "student.inner_width"), ({"inner_width": [0.5, 1.5]}, "student.inner_width")])
def test_bad_inner_width_is_a_config_error(rules: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        convert_resnet(teacher_of("basic"), QuantConfig(), SHAPE, **rules)
