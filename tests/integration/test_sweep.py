"""A Hydra multirun over seeds: one run directory per job (teachers trained the same way)."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_seed_sweep_makes_two_run_directories(tmp_path, h):
    root = tmp_path
    h.run_cli("teacher", ["-m", "seed=1,2", "experiment=demo", "debug=fast"], root,
              timeout=1200, check=True)
    for seed in (1, 2):
        assert h.teacher_path(root, seed).is_file()
    h.run_cli("distill", ["-m", "seed=1,2", "experiment=demo", "debug=fast", "logger=none"],
              root, timeout=1800, check=True)
    sweeps = sorted((root / "outputs" / "demo").glob("multirun_*"))
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    seeds = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        seeds.append(metrics["seed"])
        assert (job / "student.pt").is_file()
        assert all((d / "DONE").exists() for d in (job / "stages").iterdir())
        assert 0 <= metrics["student"]["test/top1"] <= 100
    assert seeds == [1, 2]
    a, b = (json.loads((j / "metrics.json").read_text()) for j in jobs)
    assert a["stages"] != b["stages"]  # different seeds, different runs
