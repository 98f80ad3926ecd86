"""Beam search against exhaustive search; cached incremental decoding against full decoding."""
from __future__ import annotations

import itertools

import pytest
import torch
from tiny_transformer import BOS, EOS, PAD, padded_batch, tiny_teacher

from archnet.convert.transformer import convert_transformer
from archnet.decode.beam import beam_search, greedy_decode, length_normalized
from archnet.models.transformer import Transformer
from archnet.ops.quant import quant_config


def _sharpen(model: Transformer, factor: float = 6.0) -> Transformer:
    with torch.no_grad():
        model.prj.weight.mul_(factor)  # peaked distributions: no near-ties between hypotheses
    return model


@torch.no_grad()
def _score(model: Transformer, src: torch.Tensor, seq: list[int], alpha: float) -> float:
    """Length-normalised log-probability of ``seq + [EOS]`` by one teacher-forced forward."""
    full = torch.tensor([[BOS, *seq, EOS]])
    logp = torch.log_softmax(model(src[None], full[:, :-1]).double(), -1)[0]
    total = logp.gather(1, full[0, 1:, None]).sum().item()
    return float(length_normalized(total, len(seq) + 1, alpha))


def _exhaustive(model: Transformer, src: torch.Tensor, words: list[int], max_len: int,
                alpha: float) -> list[tuple[float, list[int]]]:
    seqs = [list(p) for n in range(max_len) for p in itertools.product(words, repeat=n)]
    return sorted(((_score(model, src, s, alpha), s) for s in seqs), reverse=True)


@pytest.mark.parametrize(("vocab", "beam", "banned", "alpha"), [
    (6, 6, [0], 0.7),        # beam = vocabulary size: words {4, 5}, <unk> banned
    (6, 6, [0], 2.0),
    (7, 16, [], 0.7),        # words {<unk>, 4, 5, 6}: 16 live prefixes at most
])
def test_beam_equals_exhaustive(vocab: int, beam: int, banned: list[int], alpha: float) -> None:
    model = _sharpen(tiny_teacher(seed=3, vocab=vocab))
    src = padded_batch(vocab, [4, 2, 5], seed=5)
    max_len = 3
    words = [w for w in range(vocab) if w not in (PAD, BOS, EOS, *banned)]
    got = beam_search(model, src, BOS, EOS, beam=beam, max_len=max_len, alpha=alpha, pad=PAD,
                      banned_ids=banned)
    for i in range(src.shape[0]):
        row = src[i][src[i] != PAD]
        ranked = _exhaustive(model, row, words, max_len, alpha)
        assert _score(model, row, got[i], alpha) == pytest.approx(ranked[0][0], abs=1e-5)
        if ranked[0][0] - ranked[1][0] > 1e-4:
            assert got[i] == ranked[0][1]


def test_beam_batched_equals_one_at_a_time() -> None:
    model = _sharpen(tiny_teacher(seed=1), 3.0)
    src = padded_batch(24, [6, 2, 9, 4], seed=7)
    batched = beam_search(model, src, BOS, EOS, beam=4, max_len=12, pad=PAD)
    for i in range(src.shape[0]):
        row = src[i : i + 1, : int((src[i] != PAD).sum())]
        assert beam_search(model, row, BOS, EOS, beam=4, max_len=12, pad=PAD) == batched[i : i + 1]


def _students() -> list[Transformer]:
    teacher = tiny_teacher(seed=2)
    float_student = convert_transformer(teacher)
    q = quant_config({"name": "w4a8", "weight": {"method": "lsq", "bits": 4},
                      "act": {"method": "lsq", "bits": 8}})
    q_student = convert_transformer(teacher, q)
    src, tgt = padded_batch(24, [5, 7, 3], 8), padded_batch(24, [6, 4, 8], 9)
    for s in (float_student, q_student):  # BN running stats and LSQ steps from training batches
        for _ in range(3):
            s(src, tgt[:, :-1])
    return [teacher, float_student.eval(), q_student.eval()]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["teacher", "student_fp32", "student_w4a8"])
def test_cached_decoding_equals_full(which: int) -> None:
    model = _sharpen(_students()[which], 3.0)
    src = padded_batch(24, [5, 9, 2], seed=11)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.init_cache(memory, src_mask)
        prefix = torch.full((3, 1), BOS)
        for _ in range(6):
            step = model.decode_step(prefix[:, -1], cache)
            full = model.decode_full(prefix, memory, src_mask)[:, -1]
            torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)
            prefix = torch.cat([prefix, full.argmax(-1, keepdim=True)], 1)
    for fn, kw in ((greedy_decode, {}), (beam_search, {"beam": 3})):
        cached = fn(model, src, BOS, EOS, max_len=10, pad=PAD, use_cache=True, **kw)
        assert cached == fn(model, src, BOS, EOS, max_len=10, pad=PAD, use_cache=False, **kw)
    assert model.training is False


class _RowCounter:
    """Wraps a model; records how many rows each ``decode_step`` call decodes."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.rows = model, []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def decode_step(self, tokens: torch.Tensor, cache):
        self.rows.append(tokens.shape[0])
        return self.model.decode_step(tokens, cache)


@pytest.mark.parametrize("beam", [1, 3])
def test_finished_sentences_leave_the_batch(beam: int) -> None:
    """Ragged outputs: finished rows stop being decoded, and the result is unchanged."""
    model = _sharpen(tiny_teacher(seed=1), 3.0)
    with torch.no_grad():  # a louder EOS: some sentences end early, others run to max_len
        model.prj.weight[EOS] *= 2.0
    src = padded_batch(24, [6, 2, 9, 4, 3, 7], seed=7)
    counter = _RowCounter(model)
    if beam == 1:
        got = greedy_decode(counter, src, BOS, EOS, max_len=20, pad=PAD)
    else:
        got = beam_search(counter, src, BOS, EOS, beam=beam, max_len=20, pad=PAD)
    lengths = sorted(len(g) for g in got)
    assert lengths[0] < lengths[-1], "fixture must give ragged outputs"
    assert counter.rows[0] == 6 * beam and counter.rows[-1] < 6 * beam
    assert counter.rows == sorted(counter.rows, reverse=True)
    for i in range(src.shape[0]):  # unchanged: each sentence decoded on its own
        row = src[i : i + 1, : int((src[i] != PAD).sum())]
        alone = (greedy_decode(model, row, BOS, EOS, max_len=20, pad=PAD) if beam == 1 else
                 beam_search(model, row, BOS, EOS, beam=beam, max_len=20, pad=PAD))
        assert alone == got[i : i + 1]
