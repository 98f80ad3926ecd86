"""The Transformer track's engine pieces: schedule specs, task loss/agreement, RFA adapters,
teacher lr schedule, ONNX export, and config composition of every transformer recipe."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_transformer import BOS, EOS, PAD, padded_batch, tiny_teacher

from archnet.convert.transformer import build_rfa_adapters, convert_transformer
from archnet.convert.transformer_schedule import period_loss, transformer_periods
from archnet.distill.stage_module import DistillNet
from archnet.distill.translation import TranslationTask, rfa_adapters, transformer_schedule
from archnet.errors import ConfigError
from archnet.ops.quant import quant_config
from archnet.teacher.translation import lr_factor

W2A4 = {"weight": {"method": "lsq", "bits": 2}, "act": {"method": "lsq", "bits": 4}}


def fake_dm(vocab: int = 24) -> SimpleNamespace:
    tok = SimpleNamespace(eos_id=EOS, bos_id=BOS, pad_id=PAD, unk_id=0, vocab_size=vocab)
    return SimpleNamespace(pad_id=PAD, vocab_size=vocab, tokenizer=tok)


def test_schedule_from_tap_names_matches_periods() -> None:
    names = tiny_teacher(n_enc=6, n_dec=6).tap_names
    stages = transformer_schedule(names, samples_per_period=1000, final_samples=5000, scale=0.5,
                                  optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3},
                                  final_lr_scheduler={"_target_": "x.y", "period_samples": 10})
    periods = transformer_periods(6, 6)
    assert [s.name for s in stages] == [p.name for p in periods] and len(stages) == 15
    assert [s.samples for s in stages] == [500] * 14 + [2500]
    assert {(t.tap, t.loss, t.weight) for t in stages[-1].terms} == set(periods[-1].as_terms())
    assert stages[0].lr_scheduler is None and stages[-1].lr_scheduler["period_samples"] == 10
    assert stages[3].optimizer["lr"] == 1e-3


def test_schedule_checks_losses_and_overrides() -> None:
    names = tiny_teacher().tap_names
    stages = transformer_schedule(names, 100, 200, stage_overrides={"00_enc_in": {"samples": 7}})
    assert len(stages) == 2 + 2 + 2 + 1 and stages[0].samples == 7
    bad = {"00_enc_in": {"terms": [{"tap": "enc.in", "loss": "kl", "weight": 1.0}]}}
    with pytest.raises(ConfigError, match="loss"):
        transformer_schedule(names, 100, 200, stage_overrides=bad)
    with pytest.raises(ConfigError, match="samples_per_period"):
        transformer_schedule(names, 0, 200)


def test_task_loss_is_period_loss_with_rfa() -> None:
    teacher = tiny_teacher()
    student = convert_transformer(teacher, quant_config(W2A4))
    net = DistillNet(student, rfa_adapters(teacher, student))
    src, tgt = padded_batch(24, [5, 3, 4]), padded_batch(24, [4, 6, 2], seed=1)
    task = TranslationTask(fake_dm(), mask_pads=True, cos_dim=-1, ce_reduction="mean")
    inputs = task.eval_inputs((src, tgt))
    assert torch.equal(inputs[1], tgt[:, :-1])
    stage = transformer_schedule(teacher.tap_names, 10, 10)[-1]
    with torch.no_grad():
        t_taps = teacher.forward_taps(*inputs)
        s_taps = student.forward_taps(*inputs)
        total, parts = task.loss(stage.terms, s_taps, t_taps, inputs, net.adapt)
        # the same RFA modules through the convert module's adapter container
        ref_adapters = build_rfa_adapters(teacher.tap_names, 16)
        for key, mod in net.adapters.items():
            ref_adapters[key].load_state_dict(mod.rfa.state_dict())
        gold_out = tgt[:, 1:]
        ref, _ = period_loss(transformer_periods(2, 2)[-1], s_taps, t_taps, *inputs, PAD, ref_adapters,
                             ce_reduction="mean", tgt_out=gold_out)
    assert torch.allclose(total, ref) and "ce/logits" in parts and "mse/enc.in" in parts


def test_agreement_counts_real_target_positions() -> None:
    task = TranslationTask(fake_dm(5))
    tgt_in = torch.tensor([[BOS, 4, EOS, PAD], [BOS, 4, 4, 4]])
    t = torch.zeros(2, 4, 5)
    t[..., 4] = 1.0
    s = t.clone()
    s[1, 3] = torch.tensor([0.0, 0, 9, 0, 0])  # one disagreement at a real position
    s[0, 2] = torch.tensor([0.0, 0, 9, 0, 0])  # EOS input: its next token is pad, not counted
    assert task.agreement(s, t, (tgt_in, tgt_in)) == (5.0, 6)


def test_task_rejects_small_vocab_and_bad_flags() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        TranslationTask(fake_dm(30), vocab_size=24)
    with pytest.raises(ConfigError, match="ce_mask"):
        TranslationTask(fake_dm(), ce_mask="pred")
    with pytest.raises(ConfigError, match="targets"):
        TranslationTask(fake_dm(), targets="human")


def test_rfa_adapters_take_student_and_teacher_tensors() -> None:
    teacher = tiny_teacher()
    adapters = rfa_adapters(teacher, teacher, squeeze=4)
    assert "enc.0.mha" in adapters and "enc.0.attn_map" not in adapters and "logits" not in adapters
    s = torch.randn(2, 3, 16)
    assert adapters["dec.in"](s, torch.randn(2, 3, 16)).shape == s.shape
    with pytest.raises(ConfigError):
        rfa_adapters(teacher, teacher, taps=["nope"])


def test_lr_factor_warmup_then_decay() -> None:
    assert lr_factor(0, 100, 10, "inverse_sqrt") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "inverse_sqrt") == pytest.approx(1.0)
    assert lr_factor(39, 100, 10, "inverse_sqrt") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-9)


def test_export_qdq_matches_fake_quant_and_fits_profile(tmp_path: Path) -> None:
    from archnet.deploy.export_transformer import export_transformer

    teacher = tiny_teacher()
    student = convert_transformer(teacher, quant_config(W2A4))
    src, tgt = padded_batch(24, [5, 3, 7]), padded_batch(24, [4, 6, 2], seed=1)
    student.train()(src, tgt[:, :-1])  # initialise the LSQ steps
    out = export_transformer(student, tmp_path, src, tgt[:, :-1])
    assert Path(out["onnx"]).is_file() and (tmp_path / "quant.json").is_file()
    assert out["verdict"] == "pass", out["violations"][:5]
    assert out["ort_max_abs_diff"] < 1e-3
    assert out["weight_bits"] == [2, 8] and out["activation_bits"] == [4]
    assert "Softmax" in out["exceptions"] and out["table_lookups"] == []
    assert student.training  # left in its mode


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[3] / "conf"
                                                         / "experiment").glob("*multi30k*.yaml")))
def test_transformer_experiments_compose(name: str, tmp_path: Path, monkeypatch, compose_cfg,
                                        data_or_skip) -> None:
    """Every Transformer recipe composes for both entry points, passes validation (without
    a checkpoint) and expands into the schedule of its teacher's layer counts."""
    from archnet.config.schema import meta_teacher, validate_distill, validate_teacher
    from archnet.distill.build import build_schedule

    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    cfg = compose_cfg("distill", [f"experiment={name}", "teacher.checkpoint=null"])
    with data_or_skip():
        validate_distill(cfg)
    validate_teacher(compose_cfg("teacher", [f"experiment={name}", "teacher.checkpoint=null"]))
    teacher = meta_teacher(cfg)
    stages = build_schedule(cfg, teacher.tap_names)
    assert len(stages) == 3 + cfg.teacher.model.cfg.n_enc + cfg.teacher.model.cfg.n_dec
    assert stages[-1].terms[-1].loss == "ce"
    assert cfg.data.task._target_.endswith("TranslationTask")
