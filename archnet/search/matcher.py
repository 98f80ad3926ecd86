"""Matchers: pick the board entry (peer) the sampled path distils from, and its weight rho.

* :class:`Top1Matcher` -- the best entry, ``rho = 0.5`` (Cream's ``top1`` ablation).
* :class:`NearestMatcher` -- the entry whose cached outputs ``q`` are closest to the current
  path's outputs ``p`` on that entry's cached inputs in symmetric KL,
  ``d = mean_i [KL(p_i || q_i) + KL(q_i || p_i)]``; ``rho = 0.5``, or ``exp(-d / kappa)``.
* :class:`MetaMatcher` -- Cream's matching network: a linear ``M`` on the flattened
  ``S x C`` difference ``Delta_k = softmax(z_s(x_k)) - q_k``; the peer is ``argmax_k M(Delta_k)``
  and ``rho = sigmoid(-M(Delta_peer))`` (reference 2.5). ``M`` is trained every ``update_every``
  steps by :func:`meta_gradient`, an exact one-step unroll over all path parameters.

``select`` returns ``rho`` as a tensor that may carry gradient to ``M``; the main loss must
detach it (:func:`archnet.search.loss.search_loss` does; reference 6.3 item 2).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.distill.losses import kl
from archnet.search.board import Board, BoardEntry

Logits = Callable[[Tensor], Tensor]


def _softmax_outputs(current: Logits, entry: BoardEntry) -> Tensor:
    with torch.no_grad():
        return F.softmax(current(entry.inputs).float(), dim=1)


class Top1Matcher(nn.Module):
    name = "top1"

    def select(self, board: Board, current: Logits) -> tuple[BoardEntry, Tensor]:
        best = board.best()
        assert best is not None, "select() needs a non-empty board"
        return best, torch.tensor(0.5)


def symmetric_kl(p: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """``mean_i sum_c (p - q) (log p - log q)`` = mean symmetric KL of row distributions."""
    return ((p - q) * ((p + eps).log() - (q + eps).log())).sum(1).mean()


class NearestMatcher(nn.Module):
    name = "nearest"

    def __init__(self, kappa: float | None = None) -> None:
        super().__init__()
        self.kappa = kappa

    def select(self, board: Board, current: Logits) -> tuple[BoardEntry, Tensor]:
        dists = [float(symmetric_kl(_softmax_outputs(current, e), e.outputs.detach().float())) for e in board]
        k = min(range(len(dists)), key=dists.__getitem__)
        rho = 0.5 if self.kappa is None else math.exp(-dists[k] / self.kappa)
        return board.entries[k], torch.tensor(rho)


class MetaMatcher(nn.Module):
    """Linear matching network over ``slice_size x num_classes`` softmax differences."""

    name = "meta"

    def __init__(self, num_classes: int, slice_size: int = 4, lr: float = 1e-3, update_every: int = 50,
                 inner_batch: int = 16, clip: float | None = 1.0) -> None:
        super().__init__()
        self.layer = nn.Linear(num_classes * slice_size, 1)
        self.update_every, self.inner_batch, self.clip = int(update_every), int(inner_batch), clip
        self.optimizer = torch.optim.Adam(self.layer.parameters(), lr=lr)
        self.last_delta: Tensor | None = None

    def forward(self, delta: Tensor) -> Tensor:
        """Matching score ``M(Delta)`` of each row of ``delta`` (``[k, S*C] -> [k, 1]``)."""
        return self.layer(delta)

    def delta(self, current: Logits, entry: BoardEntry) -> Tensor:
        """``Delta = softmax(z_s(x_entry)) - q_entry``, flattened (no gradient)."""
        return (_softmax_outputs(current, entry) - entry.outputs.detach().float()).flatten()

    def select(self, board: Board, current: Logits) -> tuple[BoardEntry, Tensor]:
        deltas = torch.stack([self.delta(current, e) for e in board]).to(self.layer.weight.device)
        scores = self(deltas).squeeze(1)
        k = int(scores.argmax())
        self.last_delta = deltas[k].detach()
        return board.entries[k], torch.sigmoid(-scores[k])

    def step(self, grads: list[Tensor]) -> None:
        """Apply meta-gradients (one per ``self.layer`` parameter) with the meta optimizer."""
        for p, g in zip(self.layer.parameters(), grads):
            p.grad = g.detach().clone()
        if self.clip:
            nn.utils.clip_grad_norm_(self.layer.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def meta_gradient(forward: Callable[[dict[str, Tensor], Tensor], Tensor], params: dict[str, Tensor],
                  matcher: nn.Module, delta: Tensor, x1: Tensor, t1: Tensor, p1: Tensor,
                  x2: Tensor, t2: Tensor, lr: float, tau: float = 1.0) -> list[Tensor]:
    """Exact one-step-unroll meta-gradient ``dL_out / dphi`` for the parameters ``phi`` of ``matcher``.

    With ``rho(phi) = sigmoid(-matcher(Delta))`` and ``f(theta, x)`` = ``forward(params, x)``:

        L_in(theta, phi)  = 1/2 [(2 - rho) KD(t1 -> f(theta, x1)) + rho KD(p1 -> f(theta, x1))]
        theta'(phi)       = theta - lr * dL_in/dtheta          (the student's SGD step, true lr)
        L_out(phi)        = KD(t2 -> f(theta'(phi), x2))       (label-free, second slice)
        dL_out/dphi       = -lr (dL_out/dtheta')^T d^2 L_in / (dtheta dphi)

    computed by differentiating through the simulated step (``create_graph=True``) over every
    tensor in ``params``; nothing is updated in place. ``t``/``p`` are teacher/peer logits.
    """
    phi = [p for p in matcher.parameters() if p.requires_grad]
    names = [k for k, v in params.items() if v.requires_grad]
    theta = {k: params[k] for k in names}
    rho = torch.sigmoid(-matcher(delta.unsqueeze(0))).squeeze()
    z1 = forward(params, x1)
    inner = 0.5 * ((2 - rho) * kl(z1, t1, tau) + rho * kl(z1, p1, tau))
    grads = torch.autograd.grad(inner, [theta[k] for k in names], create_graph=True, allow_unused=True)
    stepped = dict(params)
    for k, g in zip(names, grads):
        if g is not None:
            stepped[k] = theta[k] - lr * g
    outer = kl(forward(stepped, x2), t2, tau)
    meta = torch.autograd.grad(outer, phi, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(phi, meta)]
