"""``archnet-export``: the CLI task is a thin wrapper around ``export_student``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_students import build_student, images, quant
from omegaconf import OmegaConf

from archnet.cli import export as cli
from archnet.deploy.profile import PROFILE_DIR
from archnet.errors import ConfigError


def test_task_exports_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import archnet.distill.rundir as rundir

    q = quant()
    student = build_student(q)
    run_cfg = OmegaConf.create({"quant": dataclasses.asdict(q),
                                "profile": OmegaConf.load(PROFILE_DIR / "archnet.yaml")})
    monkeypatch.setattr(rundir, "load_student", lambda rd: (student, run_cfg))
    monkeypatch.setattr(cli, "test_images", lambda cfg, n, bs: images(n))
    monkeypatch.setattr(cli, "run_dir", lambda: tmp_path)
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "profile": None, "example_batch": 8,
                            "parity_images": 50, "batch_size": 64, "strict": True})
    metrics = cli.task(cfg)
    assert metrics["verdict"] == "pass" and metrics["intsim"]["top1_agreement"] >= 0.99
    for name in ("student.onnx", "quant.json", "summary.md", "export.json"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "export.json").read_text())
    assert saved["bitops"] == metrics["bitops"] > 0


def test_validate_rejects_unfinished_run(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "profile": None, "example_batch": 16,
                            "parity_images": 0, "batch_size": 64, "strict": False})
    with pytest.raises(ConfigError, match="run_dir"):
        cli.validate(cfg)
    cfg.example_batch = 0
    with pytest.raises(ConfigError, match="example_batch"):
        cli.validate(cfg)


def test_cli_bad_run_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "archnet-export"
    proc = subprocess.run([str(exe), f"run_dir={tmp_path / 'missing'}"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "run_dir" in proc.stderr
    assert not (tmp_path / "missing").exists()  # nothing written
