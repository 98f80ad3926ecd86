"""``schedule.passes=2`` end to end in this process: the progressive stages run twice in a row,
stage directories numbered on, and the second pass trains the student the first one left."""
from __future__ import annotations

import pytest
import torch

PASSES = ["schedule=progressive", "schedule.taps=[stem]", "schedule.first_samples=32",
          "schedule.middle_samples=32", "schedule.final_samples=32", "schedule.passes=2",
          "schedule.lr_scheduler=null", "distill.batch_size=16", "distill.chunk_steps=2",
          "logger=none", "progress=false", "debug=fast", "schedule.scale=1"]
NAMES = ["00_stem", "01_final", "02_stem", "03_final"]


def _student(stage_dir) -> dict[str, torch.Tensor]:
    state = torch.load(stage_dir / "state.pt", map_location="cpu", weights_only=False)
    return {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}


@pytest.fixture(scope="module")
def two_pass_run(tmp_path_factory, trained_teacher, h):
    root = h.make_root(tmp_path_factory.mktemp("passes"), trained_teacher)
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(root))
    try:
        run_dir = root / "run"
        metrics = h.distill(run_dir, PASSES)
    finally:
        mp.undo()
    return run_dir, metrics


def test_two_passes_run_every_stage_twice(two_pass_run, h):
    run_dir, metrics = two_pass_run
    assert [d.name for d in h.stage_dirs(run_dir)] == NAMES
    assert list(metrics["stages"]) == NAMES
    assert [s["samples"] for s in metrics["stages"].values()] == [32] * 4
    assert metrics["samples"] == 128
    final = [s for s in metrics["schedule"] if s["name"].endswith("_final")]
    assert [[t["tap"] for t in s["terms"]] for s in final] == [["stem", "logits"]] * 2


def test_second_pass_trains_on_from_the_first(two_pass_run, h):
    run_dir, _ = two_pass_run
    after = {d.name: _student(d) for d in h.stage_dirs(run_dir)}
    stem = [k for k in after["01_final"] if k.startswith("stem.") and k.endswith("weight")]
    head = [k for k in after["01_final"] if k.startswith("head.") and k.endswith("weight")]
    assert stem and head
    # 02_stem trains the stem only: the head is the one 01_final left, the stem moved
    assert all(torch.equal(after["02_stem"][k], after["01_final"][k]) for k in head)
    assert any(not torch.equal(after["02_stem"][k], after["01_final"][k]) for k in stem)
    # 03_final moves the head again; the saved student is the last stage's
    assert any(not torch.equal(after["03_final"][k], after["02_stem"][k]) for k in head)
    saved = h.load(run_dir / "student.pt")["state_dict"]
    assert all(torch.equal(saved[k], after["03_final"][k]) for k in head + stem)
