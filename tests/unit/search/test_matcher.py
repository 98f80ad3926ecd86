"""Matchers: selection and rho; the meta-gradient is exact (finite differences); rho is
detached from the main loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archnet.distill.losses import kl
from archnet.search.board import Board, BoardEntry
from archnet.search.loss import search_loss
from archnet.search.matcher import MetaMatcher, NearestMatcher, Top1Matcher, meta_gradient

C, S = 5, 4


def toy_board(current) -> Board:
    """Three entries; entry (1,) caches exactly what ``current`` outputs on its inputs."""
    g = torch.Generator().manual_seed(0)
    board = Board(size=3, gap=5.0)
    for i, score in enumerate([90.0, 80.0, 70.0]):
        x = torch.randn(S, 3, generator=g)
        q = F.softmax(current(x), 1) if i == 1 else F.softmax(3 * torch.randn(S, C, generator=g), 1)
        board.consider(BoardEntry(score, 10 + i, (i,), x, q))
    return board


def current_model():
    torch.manual_seed(0)
    return nn.Linear(3, C)


@pytest.mark.parametrize("matcher", [Top1Matcher(), NearestMatcher(), NearestMatcher(kappa=0.5),
                                     MetaMatcher(C, S)], ids=["top1", "nearest", "nearest_kappa", "meta"])
def test_select_returns_a_board_entry_and_rho_in_unit_interval(matcher):
    f = current_model()
    board = toy_board(f)
    entry, rho = matcher.select(board, f)
    assert entry in board.entries
    assert 0.0 < float(rho) < 1.0 or (float(rho) == 1.0 and isinstance(matcher, NearestMatcher))
    if isinstance(matcher, Top1Matcher):
        assert entry is board.best() and float(rho) == 0.5
    if isinstance(matcher, NearestMatcher):
        assert entry.path == (1,)  # identical cached outputs: distance 0


def two_layer():
    torch.manual_seed(3)
    params = {"w1": torch.randn(6, 3, dtype=torch.float64, requires_grad=True),
              "w2": torch.randn(C, 6, dtype=torch.float64, requires_grad=True)}

    def forward(p, x):
        return torch.tanh(x @ p["w1"].T) @ p["w2"].T

    return params, forward


def test_meta_gradient_matches_finite_differences():
    params, forward = two_layer()
    torch.manual_seed(4)
    m = MetaMatcher(C, S).double()
    with torch.no_grad():
        m.layer.weight.normal_(0, 0.5)
    delta = torch.randn(S * C, dtype=torch.float64) * 0.3
    x1, x2 = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    t1, t2, p1 = (torch.randn(8, C, dtype=torch.float64) * 2 for _ in range(3))
    lr = 0.5
    got = meta_gradient(forward, params, m, delta, x1, t1, p1, x2, t2, lr)

    def outer() -> float:
        rho = torch.sigmoid(-m(delta.unsqueeze(0))).squeeze()
        z1 = forward(params, x1)
        inner = 0.5 * ((2 - rho) * kl(z1, t1) + rho * kl(z1, p1))
        g = torch.autograd.grad(inner, list(params.values()))
        stepped = {k: v - lr * gi for (k, v), gi in zip(params.items(), g)}
        return float(kl(forward(stepped, x2), t2))

    eps = 1e-5
    for p, g in zip(m.parameters(), got):
        fd = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += eps
            up = outer()
            with torch.no_grad():
                p.view(-1)[i] -= 2 * eps
            down = outer()
            with torch.no_grad():
                p.view(-1)[i] += eps
            fd.view(-1)[i] = (up - down) / (2 * eps)
        assert fd.abs().max() > 1e-6  # the signal is not trivially zero
        torch.testing.assert_close(g, fd, rtol=1e-2, atol=1e-9)


def test_meta_gradient_covers_every_parameter_not_just_the_first():
    """Cream's bug (reference 6.3 item 3) kept only the first tensor's chain-rule term."""
    params, forward = two_layer()
    m = MetaMatcher(C, S).double()
    delta = torch.randn(S * C, dtype=torch.float64)
    args = (torch.randn(8, 3, dtype=torch.float64), *(torch.randn(8, C, dtype=torch.float64) for _ in range(2)),
            torch.randn(8, 3, dtype=torch.float64), torch.randn(8, C, dtype=torch.float64), 0.5)
    full = meta_gradient(forward, params, m, delta, *args)
    frozen_w2 = {"w1": params["w1"], "w2": params["w2"].detach()}
    first_only = meta_gradient(forward, frozen_w2, m, delta, *args)
    assert not torch.allclose(full[0], first_only[0])


def test_rho_is_detached_from_the_main_loss():
    f = current_model()
    board = toy_board(f)
    m = MetaMatcher(C, S)
    _, rho = m.select(board, f)
    assert rho.requires_grad  # the matcher's rho does carry gradient ...
    x = torch.randn(8, 3)
    z_s = f(x)
    s_taps = {"stem": z_s, "logits": z_s}
    t_taps = {"stem": torch.randn(8, C), "logits": torch.randn(8, C)}
    loss, parts = search_loss(s_taps, t_taps, ["stem"], torch.randn(8, C), rho)
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in m.parameters())  # ... the loss stops it
    assert f.weight.grad is not None and f.weight.grad.abs().sum() > 0
    assert parts["rho"] == pytest.approx(float(rho))
    # control: the same loss with an undetached rho would train the matcher
    kd_t, kd_p = kl(f(x), t_taps["logits"]), kl(f(x), torch.randn(8, C))
    (0.5 * ((2 - rho) * kd_t + rho * kd_p)).backward()
    assert any(p.grad is not None and p.grad.any() for p in m.parameters())


def test_meta_step_changes_the_matcher():
    m = MetaMatcher(C, S, lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    m.step([torch.ones_like(p) for p in m.parameters()])
    assert all(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
