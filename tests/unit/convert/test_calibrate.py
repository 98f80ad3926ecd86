"""Function-preserving start (archnet.convert.calibrate): the pre-add shift reads out the
signed tensor, and the calibrated float student computes its teacher's function."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from archnet.convert.calibrate import calibrate_student, fit_bn
from archnet.convert.resnet import convert_resnet
from archnet.errors import ConfigError
from archnet.models.resnet import ResNet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

SHAPE = (3, 16, 16)
LSQ8 = QuantConfig(name="lsq8", weight=TensorQuantConfig("lsq", 8, per_channel=True),
                   act=TensorQuantConfig("lsq", 8))


def teacher_of(kind: str) -> ResNet:
    """A random ResNet with non-trivial BN affines and running statistics from its own data."""
    torch.manual_seed(0)
    t = ResNet(kind, [1, 1], (8, 16), 10, stem="small")
    with torch.no_grad():
        for m in t.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.5)
                m.momentum = None
        t.train()
        for _ in range(4):
            t(torch.randn(64, *SHAPE))
    return t.eval()


def block_inputs(teacher: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    h, inputs = teacher.forward_stem(x), []
    for _, b in teacher.blocks():
        inputs.append(h)
        h = b(h)
    return inputs


def assert_calibrated_student_is_the_teacher(student: torch.nn.Module, teacher: ResNet) -> None:
    """Calibrated on one batch, the float student computes every tap it shares with the
    teacher on a *new* batch (every fit is exactly affine when nothing clips)."""
    x, x_new = torch.randn(128, *SHAPE), torch.randn(64, *SHAPE)
    errors = calibrate_student(student, teacher, x)
    assert len(errors) == 2 and max(errors) < 1e-4
    with torch.no_grad():
        t_taps, s_taps = teacher.forward_taps(x_new), student.eval().forward_taps(x_new)
    for name, s in s_taps.items():
        assert torch.allclose(s, t_taps[name], atol=1e-3, rtol=1e-3), name


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_shifted_preadd_tap_reads_the_signed_tensor(kind: str) -> None:
    """Float, eval, fed the teacher's block input: the student's pre-add tap is
    ``relu(p + beta) - beta = max(p, -beta)``, ``beta = max(0, k |gamma| - b)``."""
    teacher, k = teacher_of(kind), 1.5
    student = convert_resnet(teacher, QuantConfig(), SHAPE, init_merge_as_add=True, init_preadd_shift=k).eval()
    x = torch.randn(32, *SHAPE)
    with torch.no_grad():
        for h, (_, tb), (_, sb) in zip(block_inputs(teacher, x), teacher.blocks(), student.blocks()):
            p = tb.forward_taps(h, len(tb.tap_suffixes))[-2]
            bn = tb.bn3 if kind == "bottleneck" else tb.bn2
            beta = (k * bn.weight.abs() - bn.bias).clamp_min(0).view(1, -1, 1, 1)
            tap = sb.forward_taps(h, len(sb.tap_suffixes))[-2]
            assert (beta > 0).any()
            assert torch.allclose(tap, torch.maximum(p, -beta), atol=1e-5)
            assert (p < -beta).any()  # the shift is finite: some values are still clipped
            assert torch.equal(sb(h), sb.forward_taps(h, len(sb.tap_suffixes))[-1])  # no read-out


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_calibrated_float_student_computes_the_teacher(kind: str) -> None:
    """With a shift wide enough that nothing clips, calibration makes the float student the
    teacher on *new* inputs too (every fit is exactly affine); without the shift the merges
    see relu(p) and cannot."""
    teacher = teacher_of(kind)
    wide = convert_resnet(teacher, QuantConfig(), SHAPE, init_merge_as_add=True, init_preadd_shift=10.0)
    assert_calibrated_student_is_the_teacher(wide, teacher)
    assert set(wide.tap_names) == set(teacher.tap_names)
    plain = convert_resnet(teacher, QuantConfig(), SHAPE, init_merge_as_add=True)
    assert max(calibrate_student(plain, teacher, torch.randn(128, *SHAPE))) > 1e-2


def test_calibration_is_consistent_in_train_and_eval_mode() -> None:
    """Quantized (8-bit LSQ): running statistics are the batch's, so on the calibration batch
    training mode (batch statistics) computes what eval mode does; the LSQ steps were set."""
    teacher = teacher_of("basic")
    x = torch.randn(128, *SHAPE)
    student = convert_resnet(teacher, LSQ8, SHAPE, init_merge_as_add=True, init_preadd_shift=2.0)
    errors = calibrate_student(student, teacher, x)
    assert all(0 <= e < 0.2 for e in errors)
    assert all(bool(m.init_state) for m in student.modules() if hasattr(m, "init_state"))
    with torch.no_grad():
        ev = student.eval()(x)
        for m in student.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.0  # keep the running statistics
        tr = student.train()(x)
    assert torch.allclose(ev, tr, atol=1e-3 * ev.abs().max().item())


def test_fit_bn_is_the_least_squares_affine_fit() -> None:
    torch.manual_seed(3)
    y = torch.randn(16, 4, 5, 5)
    a, b = torch.tensor([2.0, -0.5, 0.0, 1.0]), torch.tensor([0.3, 1.0, -2.0, 0.0])
    noise = 0.1 * torch.randn_like(y)
    z = a.view(1, -1, 1, 1) * y + b.view(1, -1, 1, 1) + noise
    bn = nn.BatchNorm2d(4).eval()
    fit_bn(bn, y, z)
    with torch.no_grad():
        out = bn(y)
    resid = z - out
    assert torch.allclose(resid.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)  # normal equations
    assert torch.allclose((resid * y).mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)))


def test_shift_needs_the_merge_as_add() -> None:
    with pytest.raises(ConfigError, match="init_preadd_shift"):
        convert_resnet(teacher_of("basic"), QuantConfig(), SHAPE, init_preadd_shift=1.0)
