"""Transformer track end to end on 1000 Multi30k pairs: supervised teacher -> label-free
progressive distillation through every period (1+1 layers: 5 periods) -> beam search and
BLEU -> ONNX export -> profile verification.

``test_transformer_e2e`` runs in-process (default suite); ``test_transformer_cli_e2e`` (slow)
drives the console scripts, as a user would.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from archnet.data.multi30k import default_data_dir

pytestmark = pytest.mark.skipif(default_data_dir() is None, reason="Multi30k raw files not found")

TINY = ["experiment=multi30k_small_ende_2w4a", "data.vocab_size=500", "data.module.subset=1000",
        "teacher.model.cfg.d_model=32", "teacher.model.cfg.d_inner=64", "teacher.model.cfg.n_enc=1",
        "teacher.model.cfg.n_dec=1", "teacher.model.cfg.n_head=2", "logger=none", "progress=false",
        "data.task.limit=16", "data.task.max_len=12", "data.task.beam=2",
        "data.task.splits=[test_2016_flickr,test_2017_mscoco]"]
TEACHER = ["train.epochs=1", "train.batch_size=64", "train.module.val_limit=32",
           "train.module.val_max_len=12", "train.module.limit=16", "train.module.max_len=12",
           "train.module.beam=2", "train.module.splits=[test_2016_flickr]"]
STUDENT = ["schedule.samples_per_period=48", "schedule.final_samples=64", "distill.batch_size=16",
           "distill.val_samples=32", "distill.chunk_steps=2", "distill.log_every=1"]


def check_bleu(block: dict, prefix: str = "test") -> None:
    for key in ("bleu", "bleu_paper"):
        value = block[f"{prefix}/{key}"]
        assert math.isfinite(value) and 0.0 <= value <= 100.0
    assert "tok:13a" in block[f"{prefix}/bleu_signature"]
    assert "mode:paper" in block[f"{prefix}/bleu_paper_signature"]


def check_run(run_dir: Path, n_stages: int = 5) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["stages"]) == n_stages
    assert [s["name"] for s in metrics["schedule"]][-1] == "04_final"
    for who in ("teacher", "student"):
        check_bleu(metrics[who])
        check_bleu(metrics[who], "test_2017_mscoco")
        assert metrics[who]["params"] > 0 and metrics[who]["macs_per_token"] > 0
    assert metrics["student"]["bits"] == "2w4a" and math.isfinite(metrics["bleu_gap"])
    for stage in metrics["stages"].values():
        assert 0.0 <= stage["val/agreement"] <= 100.0 and math.isfinite(stage["val/loss"])
    assert (run_dir / "student.pt").is_file() and (run_dir / "report.md").is_file()
    return metrics


def test_transformer_e2e(tmp_path: Path, monkeypatch, compose_cfg, capsys) -> None:
    from archnet.cli.verify import run_verify
    from archnet.deploy.export_transformer import export_run
    from archnet.distill.runner import run_distill
    from archnet.teacher.runner import run_teacher

    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    teacher = run_teacher(compose_cfg("teacher", TINY + TEACHER + ["train.epochs=2"]),
                          tmp_path / "teacher_run")["teacher"]
    check_bleu(teacher)
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in printed] == ["1/2", "2/2"]  # no progress bar: one line per epoch
    assert all("val/bleu" in ln and "train/loss" in ln for ln in printed)
    assert (tmp_path / "outputs" / "teachers" / "transformer_small_multi30k_ende_seed0.pt").is_file()

    cfg = compose_cfg("distill", TINY + STUDENT + ["data.targets=teacher",  # label-free prefixes
                                                   "distill.average_samples=32"])
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes for a CLI run
    run_distill(cfg, run_dir)
    averaged = check_run(run_dir)["weight_average"]  # judged by token agreement on held-out pairs
    assert averaged["updates"] == 4 and 0.0 <= averaged["agreement_average"] <= 100.0
    cached = list((tmp_path / ".cache" / "teacher_targets").glob("*.pt"))
    assert len(cached) == 1  # the teacher's translations of the 1000 sources, computed once

    out = export_run(run_dir)
    assert Path(out["onnx"]).is_file() and out["ort_max_abs_diff"] < 1e-3
    assert out["weight_bits"] == [2, 8] and out["activation_bits"] == [4]
    result = run_verify([f"model={out['onnx']}", "profile=transformer"])
    assert result.ok, result.violations[:5]
    assert {"Softmax", "MatMul", "Add", "Transpose"} <= {r.op_type for r in result.rows if r.allowed}


@pytest.mark.slow
def test_transformer_cli_e2e(tmp_path: Path, h) -> None:
    import subprocess
    import sys

    run_cli, cli_env = h.run_cli, h.cli_env
    run_cli("teacher", TINY + TEACHER, tmp_path, check=True)
    run_cli("distill", TINY + STUDENT + ["hydra.run.dir=outputs/run"], tmp_path, check=True)
    run_dir = tmp_path / "outputs" / "run"
    check_run(run_dir)
    proc = subprocess.run([sys.executable, "-m", "archnet.deploy.export_transformer", f"run_dir={run_dir}"],
                          env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    verify = run_cli("verify", [f"model={run_dir / 'export' / 'student.onnx'}", "profile=transformer"], tmp_path)
    assert verify.returncode == 0 and "OK" in verify.stdout
