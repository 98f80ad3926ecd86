"""Two CPU processes (gloo) through the CLI: Lightning's subprocess launcher re-runs the
console script under Hydra; both stages finish and every rank ends with the same student
(the per-rank held-out scores are identical)."""
from __future__ import annotations

import json

import torch


def test_ddp_two_processes_agree(root, h):
    run_dir = root / "outputs" / "ddp"
    args = [*h.SMOKE, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "distill.batch_size=8", f"hydra.run.dir={run_dir}"]
    proc = h.run_cli("distill", args, root, timeout=900, check=True)
    assert "Traceback" not in proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["stages"]) == ["00_stem", "01_logits"]
    for name, stage in metrics["stages"].items():
        assert (run_dir / "stages" / name / "DONE").exists()
        assert stage["steps"] == 64 // 16 and stage["samples"] == stage["steps"] * 16  # 2 x 8
        assert len(stage["ranks"]) == 2
        assert stage["ranks"][0] == stage["ranks"][1], stage["ranks"]
        assert stage["ranks_agree"] is True
        assert stage["val/loss"] == stage["ranks"][0]["loss"]
    assert {p.name for p in run_dir.rglob("metrics.json")} == {"metrics.json"}
    assert len(list(run_dir.rglob("student.pt"))) == 1
    ckpt = torch.load(run_dir / "stages" / "01_logits" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 4
    assert not any("teacher" in k for k in ckpt["state_dict"])  # the teacher is outside DDP
