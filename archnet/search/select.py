"""Final selection (reference 7.6): recalibrate BN, score on the probe slice, pick the best.

Candidates are the board paths plus ``random_paths`` distinct feasible paths drawn
uniformly. For each: reset and re-estimate every BN running statistic on
``recal_samples`` train images through that path (:func:`~archnet.search.bn.recalibrate`),
then score top-1 agreement (%) with the teacher on the probe slice in eval mode. The
winner maximises ``(score, -cost)``; it is recalibrated again before export, because later
candidates overwrite shared statistics. Every candidate is feasible by construction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from archnet.search.bn import recalibrate
from archnet.search.data import SearchData
from archnet.search.sampler import FeasibleSampler
from archnet.search.space import Path
from archnet.search.supernet import SuperNet


@dataclass
class Candidate:
    path: Path
    source: str  # board | random
    cost: int
    score: float

    def to_dict(self) -> dict:
        return asdict(self) | {"path": list(self.path)}


def _recal_batches(data: SearchData, samples: int, batch_size: int) -> list[Tensor]:
    out, have = [], 0
    for x in data.batches(batch_size, stream=1):
        out.append(x)
        have += len(x)
        if have >= samples:
            break
    return out


@torch.no_grad()
def probe_agreement(net: SuperNet, path: Path, data: SearchData, teacher_logits: Tensor,
                    batch_size: int = 256) -> float:
    was = net.training
    net.eval()
    try:
        z = torch.cat([net(x, path) for x in data.probe_batches(batch_size)])
    finally:
        net.train(was)
    return 100.0 * float((z.argmax(1) == teacher_logits.argmax(1)).float().mean())


def select_path(net: SuperNet, teacher: nn.Module, data: SearchData, sampler: FeasibleSampler,
                board_paths: Sequence[Path], random_paths: int = 20, recal_samples: int = 256,
                batch_size: int = 64) -> tuple[Candidate, list[Candidate]]:
    """Score every candidate after BN recalibration; returns ``(best, all candidates)``.

    On return the supernet's BN statistics are those of the best path.
    """
    with torch.no_grad():
        t_probe = torch.cat([teacher(x) for x in data.probe_batches(256)])
    recal = _recal_batches(data, recal_samples, batch_size)
    sources = [(p, "board") for p in board_paths] + [(p, "random") for p in sampler.samples(random_paths, True)]
    seen: set[Path] = set()
    candidates = []
    for path, source in sources:
        if path in seen:
            continue
        seen.add(path)
        recalibrate(net, lambda x, p=path: net(x, p), recal)
        candidates.append(Candidate(path, source, sampler.cost(path), probe_agreement(net, path, data, t_probe)))
    if not candidates:
        raise ValueError("no candidate path to select from")
    best = max(candidates, key=lambda c: (c.score, -c.cost))
    assert sampler.feasible(best.path), "selected path outside the budget"
    recalibrate(net, lambda x: net(x, best.path), recal)
    return best, candidates

