"""Function-preserving start (archnet.convert.calibrate): the pre-add shift reads out the
signed tensor, and the calibrated float student computes its teacher's function."""
from __future__ import annotations

import pytest
import torch
from resnet_teachers import SHAPE, assert_calibrated_student_is_the_teacher, block_inputs, teacher_of
from torch import nn

from archnet.convert.calibrate import calibrate_student, fit_bn
from archnet.convert.resnet import convert_resnet
from archnet.errors import ConfigError
from archnet.ops.quant import QuantConfig, TensorQuantConfig

LSQ8 = QuantConfig(name="lsq8", weight=TensorQuantConfig("lsq", 8, per_channel=True),
                   act=TensorQuantConfig("lsq", 8))


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
