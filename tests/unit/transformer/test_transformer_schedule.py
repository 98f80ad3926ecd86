"""Period derivation (reference 3.3 table) and the token-level losses."""
from __future__ import annotations

import pytest
import torch
from tiny_transformer import PAD, padded_batch, tiny_teacher

from archnet.convert.transformer import build_rfa_adapters, convert_transformer
from archnet.convert.transformer_schedule import (
    period_loss,
    tap_groups,
    teacher_ce,
    token_cosine,
    token_mse,
    transformer_periods,
)


def _kinds(period, kind):
    return {t: w for t, (k, w) in period.terms.items() if k == kind}


def test_six_plus_six_has_fifteen_periods() -> None:
    periods = transformer_periods(6, 6)
    assert len(periods) == 15
    assert [p.name for p in periods][:2] == ["00_enc_in", "01_enc_0"]
    assert periods[7].name == "07_dec_in" and periods[-1].name == "14_final"
    g = tap_groups(6, 6)
    assert len(g["enc_out"]) == 13 and len(g["dec_out"]) == 19


def test_periods_match_reference_table() -> None:
    p = transformer_periods(6, 6)
    g = tap_groups(6, 6)
    # period 0: MSE enc_out[0:1], cosine enc_emb
    assert p[0].terms == {"enc.in": ("mse", 1.0), "enc.emb": ("cosine", 1.0)}
    # period 3: MSE enc_out[0:7] decayed (newest weight 1), cosine enc_attn[0:3] and enc_emb
    mse3 = _kinds(p[3], "mse")
    assert list(mse3) == g["enc_out"][:7]
    assert mse3["enc.2.ffn"] == 1.0 and mse3["enc.2.mha"] == pytest.approx(0.8)
    assert mse3["enc.in"] == pytest.approx(0.8**6)
    assert _kinds(p[3], "cosine") == {"enc.0.attn_map": pytest.approx(0.64),
                                      "enc.1.attn_map": pytest.approx(0.8),
                                      "enc.2.attn_map": 1.0, "enc.emb": 1.0}
    # period 7: all of enc_out, dec_out[0:1]; cosine all enc maps and both embeddings
    mse7 = _kinds(p[7], "mse")
    assert set(mse7) == set(g["enc_out"]) | {"dec.in"} and mse7["dec.in"] == 1.0
    assert mse7["enc.5.ffn"] == 1.0 and mse7["enc.in"] == pytest.approx(0.8**12)
    assert set(_kinds(p[7], "cosine")) == set(g["enc_attn"]) | {"enc.emb", "dec.emb"}
    # period 10 (j = 3): dec_out[0:10], dec self/cross maps [0:3]
    mse10 = _kinds(p[10], "mse")
    assert [t for t in mse10 if t.startswith("dec")] == g["dec_out"][:10]
    assert mse10["dec.2.ffn"] == 1.0 and mse10["dec.in"] == pytest.approx(0.8**9)
    cos10 = _kinds(p[10], "cosine")
    assert {t for t in cos10 if "self_map" in t} == set(g["dec_self"][:3])
    assert cos10["dec.2.cross_map"] == 1.0 and cos10["dec.0.cross_map"] == pytest.approx(0.64)
    # final: everything, plus CE on the logits
    assert p[14].terms["logits"] == ("ce", 1.0)
    assert {t: v for t, v in p[14].terms.items() if t != "logits"} == p[13].terms
    names = tiny_teacher(n_enc=6, n_dec=6).tap_names
    assert set(p[14].terms) == set(names)
    assert p[6].deepest(names) == names.index("enc.5.ffn")


def test_period_count_follows_layer_counts() -> None:
    assert len(transformer_periods(2, 3)) == 1 + 2 + 1 + 3 + 1
    assert len(transformer_periods(1, 1)) == 5


def test_losses_ignore_pads_by_default() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    s2 = s.clone()
    s2[~valid] = 100.0
    assert token_mse(s, t, valid) == pytest.approx(token_mse(s2, t, valid).item())
    assert token_mse(s, t, valid).item() == pytest.approx(((s - t)[valid] ** 2).mean().item())
    cos = torch.nn.functional.cosine_similarity(s[valid], t[valid], dim=-1)
    assert token_cosine(s, t, valid).item() == pytest.approx(1 - cos.mean().item(), abs=1e-6)
    paper = 1 - torch.nn.functional.cosine_similarity(s, t, dim=1).mean()
    assert token_cosine(s, t, valid, dim=1).item() == pytest.approx(paper.item())
    maps_s, maps_t = torch.rand(2, 3, 4, 4).softmax(-1), torch.rand(2, 3, 4, 4).softmax(-1)
    per_query = torch.nn.functional.cosine_similarity(maps_s, maps_t, dim=-1).transpose(1, 2)[valid]
    assert token_cosine(maps_s, maps_t, valid).item() == pytest.approx(1 - per_query.mean().item(), abs=1e-6)


def test_teacher_ce_label_smoothing() -> None:
    torch.manual_seed(0)
    zs, zt = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    y = zt.argmax(-1)
    p = torch.full((2, 3, 5), 0.1 / 4).scatter(-1, y[..., None], 0.9)
    expected = -(p * zs.log_softmax(-1)).sum(-1)
    valid = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert teacher_ce(zs, zt, valid).item() == pytest.approx(expected[valid].mean().item(), rel=1e-6)
    assert teacher_ce(zs, zt, valid, reduction="sum").item() == pytest.approx(expected[valid].sum().item(), rel=1e-6)


def test_period_loss_on_models() -> None:
    teacher = tiny_teacher()
    student = convert_transformer(teacher)
    adapters = build_rfa_adapters(teacher.tap_names, 16)
    src, tgt = padded_batch(24, [5, 2], 1), padded_batch(24, [3, 6], 2)
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    periods = transformer_periods(2, 2)
    for period in (periods[1], periods[-1]):
        upto = period.deepest(teacher.tap_names)
        with torch.no_grad():
            t_taps = teacher.forward_taps(src, tgt_in, upto)
        s_taps = student.forward_taps(src, tgt_in, upto)
        assert set(period.terms) <= set(s_taps)
        total, parts = period_loss(period, s_taps, t_taps, src, tgt_in, PAD, adapters,
                                   tgt_out=tgt_out)
        assert set(parts) == set(period.terms)
        assert total.item() == pytest.approx(sum(period.terms[k][1] * v.item() for k, v in parts.items()), rel=1e-5)
        total.backward()
    assert adapters[adapters.key("dec.1.ffn")].l1.weight.grad is not None
