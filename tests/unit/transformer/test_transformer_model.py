"""Teacher Transformer: tap order, early stop, no aliasing, masks."""
from __future__ import annotations

import pytest
import torch
from tiny_transformer import padded_batch

from archnet.models.transformer import Transformer, TransformerConfig


def test_tap_names_order_and_count(teacher: Transformer) -> None:
    names = teacher.tap_names
    assert names[:5] == ["enc.emb", "enc.in", "enc.0.attn_map", "enc.0.mha", "enc.0.ffn"]
    assert names.index("dec.emb") == 2 + 3 * 2  # every encoder tap comes first
    assert names[-6:] == ["dec.1.self_map", "dec.1.self_mha", "dec.1.cross_map",
                          "dec.1.cross_mha", "dec.1.ffn", "logits"]
    assert len(names) == 2 + 3 * 2 + 2 + 5 * 2 + 1


def test_forward_taps_matches_forward_and_shapes(teacher: Transformer) -> None:
    src, tgt = padded_batch(24, [5, 3, 7], 1), padded_batch(24, [4, 6, 2], 2)[:, :-1]
    taps = teacher.forward_taps(src, tgt)
    assert list(taps) == teacher.tap_names
    torch.testing.assert_close(taps["logits"], teacher(src, tgt))
    assert taps["enc.0.attn_map"].shape == (3, 2, src.shape[1], src.shape[1])
    assert taps["dec.1.cross_map"].shape == (3, 2, tgt.shape[1], src.shape[1])
    assert taps["dec.0.ffn"].shape == (3, tgt.shape[1], 16)
    # attention never looks at pads or at the future
    assert taps["enc.0.attn_map"][0, :, :, 7:].abs().max() == 0
    assert taps["dec.0.self_map"][1].triu(1).abs().max() == 0
    ptrs = {t.data_ptr() for t in taps.values()}
    assert len(ptrs) == len(taps)  # explicit captures, no aliasing


def test_forward_taps_stops_early(teacher: Transformer) -> None:
    src, tgt = padded_batch(24, [5, 3], 1), padded_batch(24, [4, 6], 2)[:, :-1]
    calls = []
    teacher.dec_in.register_forward_pre_hook(lambda *a: calls.append(1))
    out = teacher.forward_taps(src, tgt, upto="enc.1.mha")
    assert list(out) == teacher.tap_names[: teacher.tap_index("enc.1.mha") + 1]
    assert not calls  # the decoder never ran
    out = teacher.forward_taps(src, tgt, upto=teacher.tap_index("dec.in"))
    assert list(out)[-1] == "dec.in" and calls


@pytest.mark.parametrize("std", [None, 1.0])
def test_embedding_init(std: float | None) -> None:
    """Xavier by default (authors); ``emb_init_std`` draws N(0, std^2); the pad row is zero."""
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=4000, d_model=256, d_inner=64, n_enc=1, n_dec=1, n_head=4,
                            emb_init_std=std)
    model = Transformer(cfg)
    for stage in (model.enc_in, model.dec_in):
        w = stage.emb.weight.detach()
        assert torch.count_nonzero(w[cfg.pad_id]) == 0
        rows = torch.cat([w[: cfg.pad_id], w[cfg.pad_id + 1:]])
        expected = std if std is not None else (2.0 / (4000 + 256)) ** 0.5  # Xavier-uniform std
        assert rows.std().item() == pytest.approx(expected, rel=0.02)
