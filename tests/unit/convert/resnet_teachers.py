"""Small random ResNet teachers with non-trivial BN for the conversion tests (calibration,
folded adds), and the check that a calibrated float student is its teacher."""
from __future__ import annotations

import torch
from torch import nn

from archnet.convert.calibrate import calibrate_student
from archnet.models.resnet import ResNet

SHAPE = (3, 16, 16)


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
