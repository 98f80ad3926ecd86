"""BN folding: folded and unfolded students compute the same function."""
from __future__ import annotations

import pytest
import torch
from deploy_students import build_student, images, quant
from torch import nn

from archnet.deploy.fold import deploy_student, fold_bn
from archnet.deploy.modules import DeployConv, DeployHead


def test_fold_bn_into_conv_and_linear() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    lin, bn1 = nn.Linear(5, 3), nn.BatchNorm1d(3)
    for b in (bn, bn1):
        b.running_mean.uniform_(-1, 1)
        b.running_var.uniform_(0.5, 2)
        b.weight.data.uniform_(-2, 2)
        b.bias.data.uniform_(-1, 1)
        b.eval()
    x = torch.randn(2, 4, 7, 7)
    w, c = fold_bn(conv.weight, conv.bias, bn)
    assert torch.allclose(nn.functional.conv2d(x, w, c, padding=1), bn(conv(x)), atol=1e-5)
    v = torch.randn(8, 5)
    w, c = fold_bn(lin.weight, lin.bias, bn1)
    assert torch.allclose(nn.functional.linear(v, w, c), bn1(lin(v)), atol=1e-5)


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_float_student_folded_within_1e5(head: str) -> None:
    student = build_student(None, head=head)
    deploy = deploy_student(student)
    x = images(32)
    with torch.no_grad():
        ref, got = student(x), deploy(x)
        student64 = student.double()
        ref64, got64 = student64(x.double()), deploy_student(student64)(x.double())
    scale = max(1.0, ref.abs().max().item())  # float32 rounding grows with the logit scale
    assert (got - ref).abs().max().item() < 1e-5 * scale
    assert (got64 - ref64).abs().max().item() < 1e-10  # folding itself is exact
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    assert student.stem[0].bn.weight.requires_grad  # the student itself is untouched


def test_quantized_student_folded_matches_fake_quant() -> None:
    student = build_student(quant())
    deploy = deploy_student(student)
    x = images(256)
    with torch.no_grad():
        ref, got = student(x), deploy(x)
    assert torch.equal(ref.argmax(1), got.argmax(1))
    # float32 rounding can flip an activation code now and then (which then propagates)
    close = (got - ref).abs().amax(1) < 1e-4
    assert close.float().mean().item() >= 0.99
    units = [m for m in deploy.modules() if isinstance(m, DeployConv)]
    assert len(units) == 12 and all(u.codes.dtype == torch.int8 and u.w_bits == 2 for u in units)
    assert all(set(u.codes.unique().tolist()) <= {-3, -1, 1, 3} for u in units)
    head = next(m for m in deploy.modules() if isinstance(m, DeployHead))
    assert head.codes.dtype == torch.int16 and head.w_bits == 8  # DoReFa 8-bit codes reach +-255
