"""LSQ first step (``quant.*.step_init``): the paper's ``2 mean|x| / sqrt(Qp)`` and the
least-squares step, which keeps one large entry among many small ones."""
from __future__ import annotations

import math

import pytest
import torch

from archnet.ops.lsq import LsqAct, LsqWeight, mse_step


def quant_error(x: torch.Tensor, s: torch.Tensor, qn: int, qp: int, dims: tuple[int, ...]) -> torch.Tensor:
    return (x - torch.round(torch.clamp(x / s, qn, qp)) * s).pow(2).sum(dims, keepdim=True)


def identity_rows(channels: int = 4, fan_in: int = 288) -> torch.Tensor:
    """Rows like a folded merge conv: small conv weights and one identity tap of 1."""
    torch.manual_seed(0)
    w = 0.02 * torch.randn(channels, fan_in, 1, 1)
    w[torch.arange(channels), fan_in // 2 + torch.arange(channels)] = 1.0
    return w


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mse_step_beats_the_papers_step_and_the_clip_free_step(bits: int) -> None:
    w = identity_rows()
    dims, qn, qp = (1, 2, 3), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    s = mse_step(w, dims, True, qn, qp)
    assert s.shape == (4, 1, 1, 1)
    paper = 2 * w.abs().mean(dims, keepdim=True) / math.sqrt(qp)
    clip_free = w.abs().amax(dims, keepdim=True) / qp
    err = quant_error(w, s, qn, qp, dims)
    assert (err <= quant_error(w, paper, qn, qp, dims) + 1e-12).all()
    assert (err <= quant_error(w, clip_free, qn, qp, dims) + 1e-12).all()


def test_the_papers_step_clips_the_identity_tap_and_mse_keeps_it() -> None:
    w = identity_rows()
    rows = torch.arange(4), 144 + torch.arange(4)
    paper, mse = LsqWeight(8, per_channel=True), LsqWeight(8, per_channel=True, init="mse")
    q_paper, q_mse = paper.train()(w), mse.train()(w)
    assert (q_paper[rows].squeeze() < 0.6).all()  # 127 * 2 mean|w| / sqrt(127) ~ 0.45
    assert ((q_mse[rows].squeeze() - 1.0).abs() < mse.alpha.squeeze()).all()
    assert bool(mse.init_state) and mse.alpha.shape == (4, 1, 1, 1)


def test_mse_step_of_a_uniform_tensor_is_its_range_over_the_levels() -> None:
    torch.manual_seed(1)
    x = torch.rand(200_000) * 2 - 1
    s = mse_step(x, (0,), False, -128, 127)
    assert abs(float(s) * 127.5 - 1.0) < 0.02


def test_unsigned_activation_step_looks_at_the_positive_side_only() -> None:
    torch.manual_seed(2)
    x = torch.cat([torch.rand(10_000) * 4, -100 * torch.ones(10)])  # a large negative tail is clipped by ReLU
    act = LsqAct(4, init="mse").train()
    act(x)
    assert 4 / 15 * 0.7 < float(act.alpha.detach()) <= 4 / 15 * 1.001


def test_unknown_init_is_refused() -> None:
    with pytest.raises(ValueError, match="max"):
        LsqWeight(4, init="max")
