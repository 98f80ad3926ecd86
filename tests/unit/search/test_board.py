"""Board invariants: Cream's insertion rule, size, order, and entries caching their own outputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from search_helpers import DOREFA, SHAPE

from archnet.search.board import Board, BoardEntry
from archnet.search.build import build_supernet
from archnet.search.cost import Budget, CostModel
from archnet.search.data import SearchData
from archnet.search.matcher import Top1Matcher
from archnet.search.sampler import feasible_sampler
from archnet.search.trainer import SupernetTrainer, TrainOptions


def full_board(gap: float = 5.0) -> Board:
    board = Board(size=3, gap=gap)
    for i, (score, cost) in enumerate([(80.0, 100), (70.0, 100), (60.0, 100)]):
        assert board.consider(BoardEntry(score, cost, (i,)))
    return board


# (candidate score, candidate cost, admitted?, rule)
CASES = [
    (66.0, 100, True, "score > worst + gap"),
    (65.0, 100, False, "score == worst + gap is not enough"),
    (61.0, 99, True, "score > worst and cheaper"),
    (61.0, 100, False, "score > worst, same cost"),
    (60.0, 50, False, "equal score, cheaper: not better"),
    (59.0, 10, False, "worse score, much cheaper"),
    (90.0, 500, True, "much better, dearer"),
]


@pytest.mark.parametrize("score,cost,admitted,rule", CASES, ids=[c[3] for c in CASES])
def test_insertion_rule(score, cost, admitted, rule):
    board = full_board()
    before = [e.path for e in board]
    assert board.consider(BoardEntry(score, cost, (9,))) is admitted, rule
    assert len(board) == 3
    paths = [e.path for e in board]
    if admitted:
        assert (9,) in paths and before[-1] not in paths  # the worst entry was evicted
    else:
        assert paths == before


def test_not_full_always_admits_and_order_is_score_desc_cost_asc():
    board = Board(size=5, gap=5.0)
    rows = [(50.0, 30), (70.0, 20), (50.0, 10), (90.0, 40), (10.0, 1)]
    for i, (s, c) in enumerate(rows):
        assert board.consider(BoardEntry(s, c, (i,)))
    keys = [(e.score, e.cost) for e in board]
    assert keys == [(90.0, 40), (70.0, 20), (50.0, 10), (50.0, 30), (10.0, 1)]
    assert board.consider(BoardEntry(99.0, 5, (7,)))
    assert len(board) == 5 and (10.0, 1) not in [(e.score, e.cost) for e in board]


def test_size_is_never_exceeded_and_paths_are_unique():
    board = Board(size=4, gap=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        s, c, p = torch.rand(1, generator=g).item() * 100, int(torch.randint(1, 9, (1,), generator=g)), \
            (int(torch.randint(0, 6, (1,), generator=g)),)
        board.consider(BoardEntry(s, c, p))
        assert len(board) <= 4
        assert len({e.path for e in board}) == len(board)
        keys = [(-e.score, e.cost) for e in board]
        assert keys == sorted(keys)


def test_entries_store_their_own_outputs(teacher):
    """After a search step with a peer, the new entry caches its *own* softmax (Cream stored
    the peer's, reference 6.3 item 7)."""
    torch.manual_seed(0)
    net = build_supernet(teacher, DOREFA, SHAPE, divisor=4)
    sampler = feasible_sampler(CostModel(net, SHAPE), Budget(0.0, 1.0), seed=0)
    images = torch.randint(0, 255, (96, *SHAPE), dtype=torch.uint8)
    data = SearchData([(im, 0) for im in images], lambda x: x.float() / 255 - 0.5, 32, 0)
    board = Board(size=8, gap=5.0)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    trainer = SupernetTrainer(net, teacher, sampler, data, board, Top1Matcher(), opt, None,
                              TrainOptions(steps=6, batch_size=16, cache_slice=4))
    batches = data.batches(16)
    for step in range(6):
        out = trainer.step(step, next(batches))
        new = max(board, key=lambda e: e.order)
        own = F.softmax(trainer.logits(new.path, new.inputs).float(), dim=1)
        assert torch.allclose(new.outputs, own, atol=1e-6)
        if step and out["kd_peer"] > 0:
            peer = board.best()
            if peer.path != new.path:
                assert not torch.allclose(new.outputs, F.softmax(trainer.logits(peer.path, new.inputs), 1))
    assert len(board) == 6 and all(sampler.feasible(e.path) for e in board)
