"""Integer-only simulation agrees with the fake-quantized student."""
from __future__ import annotations

import pytest
import torch
from deploy_students import build_student, images, quant

from archnet.deploy.intsim import _fixed_point, _round_shift, compare


def test_round_shift_is_floor_half_up_and_half_even() -> None:
    v = torch.arange(-40, 41, dtype=torch.int64)
    for sh in (1, 2, 3):
        shift = torch.full_like(v, sh)
        up = _round_shift(v, shift, half_even=False)
        assert torch.equal(up, torch.floor(v.double() / 2**sh + 0.5).long())
        even = _round_shift(v, shift, half_even=True)
        assert torch.equal(even, torch.round(v.double() / 2**sh).long())


def test_fixed_point_multipliers() -> None:
    a = torch.tensor([[0.0123, -3.5, 1e-7]], dtype=torch.float64)
    b = torch.tensor([0.7, -120.25, 3.0], dtype=torch.float64)
    m, o, sh = _fixed_point(a, b, torch.full_like(a, 1e5))
    assert (m.abs() < 2**31).all() and (m.abs() >= 2**30).all()
    assert torch.allclose(m.double() / 2.0**sh, a, rtol=1e-9)
    assert torch.allclose(o.double() / 2.0**sh, b, rtol=1e-9)


def test_w2a4_agreement_on_1000_images() -> None:
    """The demo configuration: 2-bit DoReFa weights, 4-bit fixed-range activations."""
    student = build_student(quant())
    result = compare(student, images(1000))
    assert result["top1_agreement"] >= 0.999
    assert result["max_logit_diff"] < 1e-3


@pytest.mark.parametrize("q", [quant("lsq", 4, "lsq", 4), quant("dorefa", 4, "fixed", 8)], ids=["lsq4", "w4a8"])
def test_integer_arithmetic_is_exact(q) -> None:
    """Against the deploy model in float64 the integer pipeline is exact up to the rounding of
    the float64 reference; LSQ concats mix activation steps (per-segment accumulators)."""
    student = build_student(q)
    result = compare(student, images(64), check_exact=True)
    assert result["exact_top1_agreement"] == 1.0
    assert result["exact_max_logit_diff"] < 1e-6
    assert result["top1_agreement"] >= 0.98 and result["fq64_top1_agreement"] >= 0.98
