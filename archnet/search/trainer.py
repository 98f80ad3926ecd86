"""Label-free supernet training with a prioritized board (reference 7.4).

Each step: draw a path uniformly from the feasible set; run the frozen teacher (no grad);
after warm-up and once the board holds entries, pick a peer and ``rho`` with the matcher
(the ``meta`` matcher is first updated every ``update_every`` steps) and compute the peer's
logits on the batch (no grad, batch statistics); minimise :func:`search_loss` for the path;
then score the path label-free (top-1 agreement with the teacher on the probe slice, or on
the batch) and offer it to the board with its own cached outputs. Fake quantization is on
from ``quant_start_step`` (:meth:`~archnet.search.supernet.SuperNet.start_quantization`,
which keeps the logit scale). Auxiliary forwards never move BN running statistics
(:func:`~archnet.search.bn.batch_stats`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from archnet.models.taps import LOGITS
from archnet.search.bn import batch_stats
from archnet.search.board import Board, BoardEntry
from archnet.search.data import SearchData
from archnet.search.loss import search_loss
from archnet.search.matcher import MetaMatcher, meta_gradient
from archnet.search.sampler import FeasibleSampler
from archnet.search.space import Path
from archnet.search.supernet import SuperNet

SCORES = ("probe", "batch")


@dataclass
class TrainOptions:
    steps: int
    batch_size: int
    warmup_steps: int = 0
    quant_start_step: int = 0
    decay: float = 0.8
    feat_weight: float = 1.0
    kd_tau: float = 1.0
    score: str = "probe"
    cache_slice: int = 4
    log_every: int = 20
    progress: bool = False   # a tqdm bar; otherwise one printed line per tenth of the steps


class SupernetTrainer:
    """Owns one search run's loop; ``fit()`` returns a summary dict."""

    def __init__(self, net: SuperNet, teacher: nn.Module, sampler: FeasibleSampler, data: SearchData,
                 board: Board, matcher: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, opts: TrainOptions,
                 log: Callable[[dict[str, float], int], None] | None = None) -> None:
        if opts.score not in SCORES:
            from archnet.errors import ConfigError

            raise ConfigError("search.board.score", opts.score, SCORES)
        self.net, self.teacher, self.sampler, self.data = net, teacher, sampler, data
        self.board, self.matcher, self.opt, self.sched, self.opts = board, matcher, optimizer, scheduler, opts
        self.log = log
        self.features = ["stem", *(f"{b.sig.name}.out" for b in net.space.blocks)]
        with torch.no_grad():
            self.probe_teacher = torch.cat([teacher(x) for x in data.probe_batches(256)])
        self.meta_updates = 0

    @torch.no_grad()
    def logits(self, path: Path, x: Tensor) -> Tensor:
        """The path's logits with batch statistics (running statistics untouched)."""
        with batch_stats(self.net):
            return self.net(x, path)

    def score(self, path: Path, x: Tensor, z_teacher: Tensor) -> float:
        """Top-1 agreement (%) with the teacher: on the probe slice, or on the batch."""
        if self.opts.score == "probe":
            x, z_teacher = self.data.probe, self.probe_teacher
        return 100.0 * float((self.logits(path, x).argmax(1) == z_teacher.argmax(1)).float().mean())

    def meta_update(self, path: Path, x: Tensor, z_teacher: Tensor, z_peer: Tensor) -> None:
        m: MetaMatcher = self.matcher  # type: ignore[assignment]
        b = m.inner_batch
        params = dict(self.net.named_parameters())
        buffers = {k: v.clone() for k, v in self.net.named_buffers()}

        def forward(p: dict[str, Tensor], xx: Tensor) -> Tensor:
            return functional_call(self.net, {**p, **buffers}, (xx, path))

        grads = meta_gradient(forward, params, m, m.last_delta, x[:b], z_teacher[:b], z_peer[:b],
                              x[b:2 * b], z_teacher[b:2 * b], self.opt.param_groups[0]["lr"], self.opts.kd_tau)
        m.step(grads)
        self.meta_updates += 1

    def step(self, step: int, x: Tensor) -> dict[str, float]:
        o, net = self.opts, self.net
        if step == o.quant_start_step:
            net.start_quantization()
        path = self.sampler.sample()
        with torch.no_grad():
            t_taps = self.teacher.forward_taps(x)
        z_t = t_taps[LOGITS]
        z_peer, rho, peer = None, 0.0, None
        if step >= o.warmup_steps and len(self.board):
            current = lambda xx: self.logits(path, xx)  # noqa: E731
            if isinstance(self.matcher, MetaMatcher) and step % self.matcher.update_every == 0:
                peer, _ = self.matcher.select(self.board, current)
                self.meta_update(path, x, z_t, self.logits(peer.path, x))
            peer, rho = self.matcher.select(self.board, current)
            z_peer = self.logits(peer.path, x)
        net.train()
        s_taps = net.forward_taps(x, path)
        loss, parts = search_loss(s_taps, t_taps, self.features, z_peer, rho, o.decay, o.feat_weight, o.kd_tau,
                                  net.tap_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        out = {"loss": float(loss.detach()), **parts, "cost": self.sampler.cost(path)}
        if step >= o.warmup_steps:
            out["score"] = self.score(path, x, z_t)
            cache = x[:o.cache_slice].detach().clone()
            own = F.softmax(self.logits(path, cache).float(), dim=1)
            out["board_changed"] = float(self.board.consider(
                BoardEntry(out["score"], self.sampler.cost(path), path, cache, own)))
        return out

    def _report(self, bar: tqdm | None, done: int, loss: float, best: BoardEntry | None, start: float) -> None:
        """Advance the bar, or print ``search step i/N ...`` at every tenth of the steps."""
        board = f"board {len(self.board)}, best {best.score:.1f}%" if best else "board empty"
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.4g}, {board}", refresh=False)
        elif done % max(1, self.opts.steps // 10) == 0 or done == self.opts.steps:
            print(f"search step {done}/{self.opts.steps}: loss {loss:.4g}, {board} "
                  f"({(time.perf_counter() - start) / 60:.1f} min)", flush=True)

    def fit(self) -> dict:
        o = self.opts
        start = time.perf_counter()
        batches = self.data.batches(o.batch_size)
        first_loss = last_loss = None
        bar = tqdm(total=o.steps, desc="search", unit="step", dynamic_ncols=True) if o.progress else None
        for step in range(o.steps):
            out = self.step(step, next(batches))
            first_loss = out["loss"] if first_loss is None else first_loss
            last_loss = out["loss"]
            best = self.board.best()
            self._report(bar, step + 1, out["loss"], best, start)
            if self.log is not None and ((step + 1) % o.log_every == 0 or step + 1 == o.steps):
                self.log({f"search/{k}": v for k, v in out.items()} | {
                    "search/lr": self.opt.param_groups[0]["lr"], "search/board_size": len(self.board),
                    "search/board_best": best.score if best else float("nan")}, step + 1)
        if bar is not None:
            bar.close()
        return {"steps": o.steps, "wall_s": time.perf_counter() - start, "first_loss": first_loss,
                "last_loss": last_loss, "meta_updates": self.meta_updates, "board": self.board.summary()}
