"""DoReFa / fixed-range / LSQ quantizers: levels, grids, straight-through gradients."""
from __future__ import annotations

import pytest
import torch

from archnet.ops.quantizers import DorefaGaussianWeight, DorefaWeight, FixedRangeAct, LsqAct, LsqWeight

BITS = range(2, 9)


def _w(seed: int = 0, shape: tuple[int, ...] = (16, 8, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def _trained(q: torch.nn.Module, w: torch.Tensor) -> torch.nn.Module:
    q.train()
    q(w)  # LSQ: the first training forward initialises the step
    return q


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", ["dorefa", "dorefa_channel", "gaussian", "lsq", "lsq_channel"])
def test_at_most_2_to_the_b_levels(method: str, bits: int) -> None:
    w = _w(bits)
    q = {"dorefa": DorefaWeight(bits), "dorefa_channel": DorefaWeight(bits, per_channel=True),
         "gaussian": DorefaGaussianWeight(bits),
         "lsq": LsqWeight(bits), "lsq_channel": LsqWeight(bits, per_channel=True)}[method]
    out = _trained(q, w)(w).detach()
    per_row = method in ("dorefa_channel", "gaussian", "lsq_channel")  # one scale per output channel
    groups = list(out) if per_row else [out]
    assert max(g.unique().numel() for g in groups) <= 2**bits
    assert out.unique().numel() >= 4  # not degenerate
    grid = q.export_grid(w)  # the integer codes reproduce the fake-quantized tensor
    assert torch.allclose(grid.dequantize(), out, atol=1e-6)
    assert grid.codes.min() >= grid.qmin and grid.codes.max() <= grid.qmax


def test_dorefa_2bit_levels_are_plus_minus_s6_s2() -> None:
    w = _w(1)
    s = 2 * torch.tanh(w).abs().mean()
    levels = DorefaWeight(2)(w).detach().unique().sort().values
    expected = torch.stack([-s / 2, -s / 6, s / 6, s / 2])
    assert torch.allclose(levels, expected, rtol=1e-6, atol=0)
    codes = DorefaWeight(2).export_grid(w).codes.unique().tolist()
    assert codes == [-3, -1, 1, 3]  # 2k - M, scale s / (2M)


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (5, 48)])
def test_dorefa_per_channel_is_per_tensor_on_each_row(shape: tuple[int, ...]) -> None:
    """Row ``c`` of the per-channel quantizer is the per-tensor quantizer applied to row ``c``
    alone (its own ``s_c = 2 mean|tanh W_c|``), so rows of very different magnitude each keep
    all their levels; the per-tensor quantizer collapses the small rows onto +-s/6."""
    w = _w(5, shape) * torch.logspace(-2, 0, shape[0]).view(-1, *[1] * (len(shape) - 1))
    per_channel = DorefaWeight(2, per_channel=True)(w)
    rows = torch.stack([DorefaWeight(2)(row) for row in w])
    assert torch.allclose(per_channel, rows, atol=1e-7)
    assert all(r.unique().numel() == 4 for r in per_channel)
    assert DorefaWeight(2)(w)[0].unique().numel() == 2  # smallest row: only +-s/6 per tensor
    grid = DorefaWeight(2, per_channel=True).export_grid(w)
    assert grid.scale.shape == (shape[0], *[1] * (len(shape) - 1))
    assert torch.allclose(grid.dequantize(), per_channel, atol=1e-7)


def test_dorefa_per_channel_gradient_is_identity_then_tanh_prime() -> None:
    w = _w(6).double().requires_grad_()
    g_out = torch.randn_like(w)
    (DorefaWeight(2, per_channel=True)(w) * g_out).sum().backward()
    assert torch.allclose(w.grad, g_out * (1 - torch.tanh(w) ** 2))


def test_dorefa_formula() -> None:
    w, bits = _w(2), 3
    m = 2**bits - 1
    t = torch.tanh(w)
    s = 2 * t.abs().mean()
    u = (t / s).clamp(-0.5, 0.5) + 0.5
    expected = (torch.floor(u * m + 0.5) / m - 0.5) * s
    assert torch.allclose(DorefaWeight(bits)(w), expected, atol=1e-7)


def test_dorefa_gradient_is_identity_then_tanh_prime() -> None:
    w = _w(3).double().requires_grad_()
    g_out = torch.randn_like(w)
    (DorefaWeight(2)(w) * g_out).sum().backward()
    assert torch.allclose(w.grad, g_out * (1 - torch.tanh(w) ** 2))
    # finite differences of the surrogate tanh (where it is defined: everywhere)
    h, x = 1e-6, w.detach()
    fd = (torch.tanh(x + h) - torch.tanh(x - h)) / (2 * h)
    assert torch.allclose(fd, 1 - torch.tanh(x) ** 2, atol=1e-8)


def test_gaussian_gradient_matches_surrogate_finite_differences() -> None:
    """Surrogate: the rounding offset ``c = round(y) - y`` frozen at the point, everything else
    (centring, row scale ``s_r``) differentiated: ``f(W) = ((y(W) + c)/M - 1/2) s_r(W)``."""
    bits, m = 8, 255.0
    w = _w(4, (3, 5)).double().requires_grad_()
    g_out = torch.randn_like(w)
    (DorefaGaussianWeight(bits)(w) * g_out).sum().backward()

    def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.tanh(x)
        tc = t - t.mean(1, keepdim=True)
        s = 2 * tc.abs().amax(1, keepdim=True)
        return (tc / s + 0.5) * m, s

    y0, _ = parts(w.detach())
    c = torch.floor(y0 + 0.5) - y0

    def surrogate(x: torch.Tensor) -> torch.Tensor:
        y, s = parts(x)
        return ((((y + c) / m) - 0.5) * s * g_out).sum()

    h, fd = 1e-7, torch.zeros_like(w)
    for i in range(3):
        for j in range(5):
            e = torch.zeros_like(w)
            e[i, j] = h
            fd[i, j] = (surrogate(w.detach() + e) - surrogate(w.detach() - e)) / (2 * h)
    assert torch.allclose(w.grad, fd, atol=1e-6)


def test_gaussian_rows_are_centred_and_8bit_by_row() -> None:
    w = _w(5, (10, 64)) + 0.3
    q = DorefaGaussianWeight(8)(w).detach()
    assert q.mean(1).abs().max() < 0.02 * q.abs().max()  # the row mean is discarded
    assert q.shape == w.shape


@pytest.mark.parametrize("bits", BITS)
def test_fixed_range_levels(bits: int) -> None:
    m = 2**bits - 1
    x = torch.linspace(-5, 15, 4001)
    y = FixedRangeAct(bits)(x)
    k = y * m
    assert torch.allclose(k, k.round(), atol=1e-5) and k.min() == 0 and k.max().round() == m
    expected = torch.floor((0.1 * x).clamp(0, 1) * m + 0.5) / m
    assert torch.allclose(y, expected, atol=1e-6)
    grid = FixedRangeAct(bits).export_grid(x)
    assert torch.allclose(grid.dequantize(), y, atol=1e-6)


def test_fixed_range_gradient_is_documented_surrogate() -> None:
    """Gradient 0.1 inside [0, 10], 0 outside: the derivative of clip(0.1 x, 0, 1), checked by
    finite differences away from the kinks."""
    x = torch.tensor([-3.0, -0.2, 0.3, 2.7, 5.0, 9.6, 10.4, 20.0], dtype=torch.float64, requires_grad=True)
    FixedRangeAct(4)(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([0, 0, 0.1, 0.1, 0.1, 0.1, 0, 0])
    h = 1e-4
    xd = x.detach()
    fd = ((0.1 * (xd + h)).clamp(0, 1) - (0.1 * (xd - h)).clamp(0, 1)) / (2 * h)
    assert torch.allclose(x.grad, fd, atol=1e-9)


def test_lsq_step_gradient_matches_lsq_formula_hand_example() -> None:
    """2-bit signed LSQ (Qn=-2, Qp=1), alpha=0.5, L = sum(q):
    v = w/alpha = [-6, -0.8, 0.52, 1.8, 10] -> dq/dalpha = [Qn, round(v)-v, round(v)-v, Qp, Qp]
    = [-2, -0.2, 0.48, 1, 1], sum 0.28, times g = 1/sqrt(5 * 1)."""
    q = LsqWeight(2)
    q.alpha.data.fill_(0.5)
    q.init_state.fill_(1)  # already initialised: keep alpha
    q.train()
    w = torch.tensor([-3.0, -0.4, 0.26, 0.9, 5.0], requires_grad=True)
    out = q(w)
    assert out.tolist() == pytest.approx([-1.0, -0.5, 0.5, 0.5, 0.5])
    out.sum().backward()
    assert q.alpha.grad.item() == pytest.approx(0.28 / 5**0.5, rel=1e-5)
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # straight through inside the range


def test_lsq_unsigned_activation_hand_example() -> None:
    """2-bit unsigned (Qp=3), alpha=1: x=[-1, 0.4, 2.6, 7] -> q=[0, 0, 3, 3];
    dq/dalpha = [Qn=0, round(.4)-.4=-.4, round(2.6)-2.6=.4, Qp=3] -> 3, times 1/sqrt(4*3)."""
    q = LsqAct(2)
    q.alpha.data.fill_(1.0)
    q.init_state.fill_(1)
    q.train()
    x = torch.tensor([-1.0, 0.4, 2.6, 7.0], requires_grad=True)
    out = q(x)
    assert out.tolist() == [0.0, 0.0, 3.0, 3.0]
    out.sum().backward()
    assert q.alpha.grad.item() == pytest.approx(3 / 12**0.5, rel=1e-5)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
