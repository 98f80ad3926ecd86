"""MobileNetV1/V2 -> Arch-Net students."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archnet.convert.mobilenet import convert_mobilenet
from archnet.models.mobilenet import mobilenet_v1, mobilenet_v2
from archnet.models.taps import tap_shapes
from archnet.ops.units import ConcatMerge, ConvUnit


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5),
                              (m.weight.data, 0.5, 1.5), (m.bias.data, -0.2, 0.2)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)


@pytest.mark.parametrize("depthwise", [True, False])
def test_v1_float_student_computes_the_teacher(depthwise):
    """V1 has ReLU everywhere and no adds, so the float student is the same function."""
    teacher = mobilenet_v1(num_classes=5, width_mult=0.5).eval()
    _randomise_bn(teacher)
    student = convert_mobilenet(teacher, input_shape=(3, 64, 64), head="gap", depthwise=depthwise).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t, s = teacher.forward_taps(x), student.forward_taps(x)
    assert list(t) == list(s)
    for k in t:
        torch.testing.assert_close(s[k], t[k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("depthwise", [True, False])
def test_v2_student_structure(depthwise):
    teacher = mobilenet_v2(num_classes=7, width_mult=1.0)
    student = convert_mobilenet(teacher, input_shape=(3, 32, 32), depthwise=depthwise)
    assert student.tap_names == teacher.tap_names
    assert tap_shapes(student, (3, 32, 32)) == tap_shapes(teacher, (3, 32, 32))
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert max(c.in_channels // c.groups for c in convs) <= 512  # 960 -> 2 x 480
    grouped = [c for c in convs if c.groups > 1]
    assert (len(grouped) == 17) if depthwise else not grouped
    stem = student.stem.conv
    assert (stem.in_channels, stem.out_channels, stem.stride) == (3, 32, (2, 2))
    b = student.get_submodule("body.1")  # features.2: expand, dw/2, project
    assert b.main[1].conv.stride == (2, 2)  # the stride-2 depthwise stays stride 2
    assert isinstance(b.main[2].act, nn.ReLU)  # linear bottleneck gets a ReLU (documented)
    assert isinstance(student.get_submodule("body.2").merge, ConcatMerge)  # features.3 add


def test_v2_weights_copied_from_teacher():
    teacher = mobilenet_v2(num_classes=7, width_mult=0.5)
    student = convert_mobilenet(teacher, input_shape=(3, 32, 32))
    expand, dw, project = student.get_submodule("body.1").main
    src = teacher.features[2].conv
    torch.testing.assert_close(expand.conv.weight[:, :, 1, 1], src[0][0].weight[:, :, 0, 0])
    assert expand.conv.weight[:, :, 0, 0].abs().max() == 0
    torch.testing.assert_close(dw.conv.weight, src[1][0].weight)
    torch.testing.assert_close(project.bn.running_var, src[3].running_var)
    torch.testing.assert_close(student.head.fc.bias, teacher.classifier[1].bias)
    dense = convert_mobilenet(teacher, input_shape=(3, 32, 32), depthwise=False)
    w = dense.get_submodule("body.1").main[1].conv.weight
    torch.testing.assert_close(torch.diagonal(w, dim1=0, dim2=1).permute(2, 0, 1), src[1][0].weight[:, 0])


def test_v2_student_trains():
    teacher = mobilenet_v2(num_classes=3, width_mult=0.35).eval()
    student = convert_mobilenet(teacher, input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t = teacher.forward_taps(x)
    s = student.forward_taps(x)
    sum(F.mse_loss(s[k], t[k]) for k in t).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert isinstance(student.stem, ConvUnit)
