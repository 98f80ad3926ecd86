"""``schedule=smoke`` end to end in this process: two stage directories with DONE markers
and a metrics.json whose keys and values are consistent (DESIGN.md 3.3)."""
from __future__ import annotations

import json
import math

import pytest
import torch

TOP_KEYS = {"experiment", "seed", "date", "machine", "test_samples", "teacher", "student",
            "stages", "schedule", "distill_wall_s", "samples", "top1_gap", "summary_lines"}
MODEL_KEYS = {"test/top1", "test/top5", "params", "macs", "bits"}
STAGE_KEYS = {"samples", "steps", "wall_s", "trainable_params", "val/loss", "val/agreement",
              "curve"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, trained_teacher, h):
    return (*h.distill_fresh(tmp_path_factory, trained_teacher, "two_stage", h.SMOKE), trained_teacher)


def test_stage_directories(smoke_run, h):
    run_dir, metrics, _ = smoke_run
    dirs = h.stage_dirs(run_dir)
    assert [d.name for d in dirs] == ["00_stem", "01_logits"]
    for d in dirs:
        assert (d / "DONE").read_text() == "done\n"
        assert {p.name for p in d.iterdir()} == {"DONE", "state.pt", "last.ckpt", "metrics.json"}
        assert json.loads((d / "metrics.json").read_text()) == json.loads(
            json.dumps(metrics["stages"][d.name]))
    for name in ("metrics.json", "student.pt", "report.md"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp")), "atomic writes leave no temporary files"


def test_metrics_json_keys_and_consistency(smoke_run, h):
    run_dir, returned, teacher_ckpt = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    assert set(metrics) == TOP_KEYS
    assert set(metrics["teacher"]) == MODEL_KEYS
    assert set(metrics["student"]) == MODEL_KEYS | {"s_per_step"}
    assert metrics["experiment"] == "distill" and metrics["seed"] == 0
    assert metrics["test_samples"] == 128  # debug=fast
    assert list(metrics["stages"]) == ["00_stem", "01_logits"]
    assert [s["name"] for s in metrics["schedule"]] == ["00_stem", "01_logits"]
    batch = 16
    for name, stage in metrics["stages"].items():
        assert set(stage) == STAGE_KEYS, name
        assert stage["steps"] == 256 * 0.25 // batch == 4
        assert stage["samples"] == stage["steps"] * batch
        assert math.isfinite(stage["val/loss"]) and stage["val/loss"] >= 0
        assert 0 <= stage["val/agreement"] <= 100
        assert stage["wall_s"] > 0
        assert [s for s, _ in stage["curve"]] == list(range(1, 5)) or [
            s for s, _ in stage["curve"]] == list(range(5, 9))
        assert all(math.isfinite(v) and v >= 0 for _, v in stage["curve"])
    # the curve's steps are global across stages
    assert [s for s, _ in metrics["stages"]["01_logits"]["curve"]] == [5, 6, 7, 8]
    assert metrics["samples"] == sum(s["samples"] for s in metrics["stages"].values()) == 128
    assert metrics["distill_wall_s"] == pytest.approx(
        sum(s["wall_s"] for s in metrics["stages"].values()))
    assert metrics["student"]["s_per_step"] == pytest.approx(metrics["distill_wall_s"] / 8)
    for who in ("teacher", "student"):
        m = metrics[who]
        assert 0 <= m["test/top1"] <= m["test/top5"] <= 100
        assert m["params"] > 0 and m["macs"] > 0 and m["bits"] == "fp32"
    assert metrics["top1_gap"] == pytest.approx(
        metrics["teacher"]["test/top1"] - metrics["student"]["test/top1"])
    # the teacher evaluated here is the trained checkpoint (same test split and size)
    saved = h.load(teacher_ckpt)["metrics"]
    assert metrics["teacher"]["test/top1"] == saved["test/top1"]
    assert metrics["teacher"]["test/top5"] == saved["test/top5"]
    assert metrics["teacher"]["params"] == saved["params"]
    # stage 1 trains the stem unit only; stage 2 everything that reaches the logits
    stem = metrics["stages"]["00_stem"]["trainable_params"]
    assert stem == 16 * 3 * 9 + 2 * 16
    assert metrics["stages"]["01_logits"]["trainable_params"] == metrics["student"]["params"]


def test_student_weights_are_the_last_stage(smoke_run, h):
    run_dir, _, _ = smoke_run
    student = h.load(run_dir / "student.pt")["state_dict"]
    last = h.load(run_dir / "stages" / "01_logits" / "state.pt")
    assert set(last) == {f"student.{k}" for k in student}
    for k, v in student.items():
        assert torch.equal(v, last[f"student.{k}"]), k
    ckpt = h.load(run_dir / "stages" / "01_logits" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(k.startswith("net.") for k in ckpt["state_dict"])  # no teacher inside
