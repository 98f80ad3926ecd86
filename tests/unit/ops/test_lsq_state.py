"""LSQ steps are initialised once, on the first training forward, and survive state_dict."""
from __future__ import annotations

import math

import torch
from torch import nn

from archnet.ops.layers import QConv2d
from archnet.ops.quantizers import LsqAct, LsqWeight


def _model(per_channel: bool) -> nn.Module:
    torch.manual_seed(0)
    conv = QConv2d(3, 8, 3, 1, 1, bias=False, weight_quantizer=LsqWeight(4, per_channel=per_channel))
    return nn.Sequential(conv, nn.BatchNorm2d(8), LsqAct(4))


def test_init_on_first_training_forward_only() -> None:
    q = LsqAct(4)
    x1, x2 = torch.randn(64) * 3, torch.randn(64) * 10
    q.eval()
    q(x1)
    assert int(q.init_state) == 0 and q.alpha.item() == 1.0  # eval does not initialise
    q.train()
    q(x1)
    assert int(q.init_state) == 1
    assert abs(q.alpha.item() - 2 * x1.abs().mean().item() / math.sqrt(15)) < 1e-6
    a = q.alpha.item()
    q(x2)
    assert q.alpha.item() == a  # never re-initialised


def test_per_channel_init() -> None:
    q = LsqWeight(4, per_channel=True).train()
    w = torch.randn(6, 3, 3, 3)
    q(w)
    assert q.alpha.shape == (6, 1, 1, 1)
    expected = 2 * w.abs().mean((1, 2, 3)) / math.sqrt(7)
    assert torch.allclose(q.alpha.flatten(), expected)


def test_state_dict_round_trip_gives_identical_outputs() -> None:
    for per_channel in (False, True):
        model = _model(per_channel).train()
        model(torch.randn(16, 3, 8, 8))  # initialises both steps
        model.eval()
        x = torch.randn(4, 3, 8, 8)
        ref = model(x)
        fresh = _model(per_channel)
        fresh.load_state_dict(model.state_dict())
        fresh.eval()
        assert torch.equal(fresh(x), ref)
        alphas = [m.alpha.detach().clone() for m in fresh.modules() if hasattr(m, "init_state")]
        fresh.train()
        fresh(torch.randn(16, 3, 8, 8) * 7)  # a reloaded model is not re-initialised
        after = [m.alpha.detach() for m in fresh.modules() if hasattr(m, "init_state")]
        assert all(torch.equal(a, b) for a, b in zip(alphas, after))
