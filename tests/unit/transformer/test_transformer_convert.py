"""Student conversion: one-hot FC embedding, masked BatchNorm, weight copy, RFA adapters."""
from __future__ import annotations

import onnx
import pytest
import torch
from tiny_transformer import PAD, padded_batch, tiny_teacher
from torch import nn

from archnet.convert.transformer import (
    MaskedBatchNorm,
    OneHotEmbedding,
    ResidualFeatureAdaptation,
    build_rfa_adapters,
    convert_transformer,
    rfa_taps,
    set_export_mode,
)
from archnet.models.transformer import Transformer
from archnet.ops.quant import make_weight_quantizer, quant_config

W2A4 = {"name": "w2a4", "weight": {"method": "lsq", "bits": 2}, "act": {"method": "lsq", "bits": 4}}


@pytest.mark.parametrize("quantized", [False, True])
def test_one_hot_fc_equals_lookup(quantized: bool) -> None:
    torch.manual_seed(0)
    wq = quant_config(W2A4).weight
    emb = OneHotEmbedding(11, 6, pad_id=PAD, weight_quantizer=make_weight_quantizer(wq) if quantized else None)
    ids = torch.tensor([[4, 7, 10, PAD], [0, 3, PAD, PAD]])
    emb(ids)  # LSQ step initialised on this first training forward
    lookup = emb(ids)
    one_hot = torch.nn.functional.one_hot(ids, 11).float()
    torch.testing.assert_close(lookup, one_hot @ emb.quantized_weight().t())
    torch.testing.assert_close(lookup, emb(one_hot))
    set_export_mode(emb, True)
    torch.testing.assert_close(emb(ids), lookup)
    assert lookup[0, 3].abs().max() == 0 and lookup[1, 2:].abs().max() == 0  # pad -> zero vector


def test_one_hot_fc_exports_without_gather(tmp_path) -> None:
    emb = OneHotEmbedding(11, 6, pad_id=PAD).eval()
    set_export_mode(emb, True)
    one_hot = torch.nn.functional.one_hot(torch.tensor([[4, 7, PAD]]), 11).float()
    path = tmp_path / "emb.onnx"
    torch.onnx.export(emb, (one_hot,), str(path), dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Gather" not in ops and ops & {"MatMul", "Gemm"}


def test_masked_bn_excludes_pads() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4) * 3 + 1
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    bn = MaskedBatchNorm(4, eps=1e-6)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
    ref = nn.BatchNorm1d(4, eps=1e-6)
    ref.load_state_dict(bn.state_dict())
    y = bn(x, valid)
    torch.testing.assert_close(y[valid], ref(x[valid]))  # statistics over real tokens only
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    x2 = x.clone()
    x2[~valid] = 1e3  # pad content does not matter
    torch.testing.assert_close(MaskedBatchNorm(4, eps=1e-6)(x2, valid)[valid],
                               MaskedBatchNorm(4, eps=1e-6)(x, valid)[valid])
    paper = MaskedBatchNorm(4, eps=1e-6, include_pad=True)
    torch.testing.assert_close(paper(x, valid), nn.BatchNorm1d(4, eps=1e-6)(x.reshape(-1, 4)).view_as(x))
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x, valid), ref(x.reshape(-1, 4)).view_as(x))


def test_conversion_copies_teacher_and_keeps_taps() -> None:
    teacher = tiny_teacher()
    student = convert_transformer(teacher, quant_config(W2A4))
    assert student.tap_names == teacher.tap_names
    assert not any(isinstance(m, (nn.LayerNorm, nn.Embedding)) for m in student.modules())
    t_layer, s_layer = teacher.enc[1].mha, student.enc[1].mha
    assert isinstance(s_layer.norm, MaskedBatchNorm) and not s_layer.norm.include_pad
    torch.testing.assert_close(s_layer.norm.weight, t_layer.norm.weight)
    torch.testing.assert_close(s_layer.norm.bias, t_layer.norm.bias)
    assert float(s_layer.norm.running_mean.abs().max()) == 0.0
    torch.testing.assert_close(student.dec[0].ffn.w_1.weight, teacher.dec[0].ffn.w_1.weight)
    torch.testing.assert_close(student.prj.weight, teacher.prj.weight)
    assert student.prj.weight_quantizer.bits == 8 and s_layer.w_q.weight_quantizer.bits == 2
    assert isinstance(student.enc_in.emb, OneHotEmbedding)
    assert not torch.equal(student.enc_in.emb.weight.t(), teacher.enc_in.emb.weight)
    init = convert_transformer(teacher, init_embedding_from_teacher=True)
    torch.testing.assert_close(init.dec_in.emb.weight.t(), teacher.dec_in.emb.weight)
    src, tgt = padded_batch(24, [5, 2], 1), padded_batch(24, [3, 6], 2)
    taps = student.forward_taps(src, tgt[:, :-1])
    assert all(taps[k].shape == v.shape for k, v in teacher.forward_taps(src, tgt[:, :-1]).items())
    taps["logits"].sum().backward()
    assert student.enc_in.emb.weight.grad is not None


def test_float_student_activations() -> None:
    student = convert_transformer(tiny_teacher())
    ffn, mha = student.enc[0].ffn, student.enc[0].mha
    assert isinstance(ffn.act1, nn.ReLU)  # the FFN's ReLU survives in float mode
    for m in (ffn.act2, ffn.act, mha.q_act, mha.o_act, mha.act, student.enc_in.emb_act):
        assert isinstance(m, nn.Identity)  # float "quantizers" are not ReLUs
    assert isinstance(mha.attn_drop, nn.Dropout) and isinstance(mha.drop, nn.Identity)
    paper = convert_transformer(tiny_teacher(), bn_include_pad=True)
    assert paper.dec[1].cross_attn.norm.include_pad


def test_rfa_adapters_outside_student() -> None:
    teacher: Transformer = tiny_teacher()
    names = teacher.tap_names
    taps = rfa_taps(names)
    assert taps[:3] == ["enc.in", "enc.0.mha", "enc.0.ffn"]
    assert "dec.0.cross_mha" in taps and "enc.emb" not in taps and "logits" not in taps
    assert len(taps) == (2 * 2 + 1) + (3 * 2 + 1)
    adapters = build_rfa_adapters(names, d_model=32, squeeze=16)
    rfa = adapters[adapters.key("dec.1.ffn")]
    assert isinstance(rfa, ResidualFeatureAdaptation)
    assert (rfa.l1.in_features, rfa.l1.out_features, rfa.l2.out_features, rfa.l3.out_features) == (32, 2, 2, 32)
    s = torch.randn(2, 3, 32)
    torch.testing.assert_close(rfa(s), rfa.l3(rfa.l2(rfa.l1(s))) + s)
    out = adapters({"enc.emb": s, "enc.in": s})
    assert out["enc.emb"] is s and not torch.equal(out["enc.in"], s)
    student = convert_transformer(teacher)
    assert not any(isinstance(m, ResidualFeatureAdaptation) for m in student.modules())
