"""``schedule.passes=2`` end to end in this process: the progressive stages run twice in a row,
stage directories numbered on, and the second pass trains the student the first one left;
with ``schedule.restart_passes=true`` the second pass starts from it as ``distill.init_student``
would (weights ``q(W)``, LSQ steps fitted anew, adapters rebuilt)."""
from __future__ import annotations

import pytest
import torch

PASSES = ["schedule=progressive", "schedule.taps=[stem]", "schedule.first_samples=32",
          "schedule.middle_samples=32", "schedule.final_samples=32", "schedule.passes=2",
          "schedule.lr_scheduler=null", "distill.batch_size=16", "distill.chunk_steps=2",
          "logger=none", "progress=false", "debug=fast", "schedule.scale=1"]
NAMES = ["00_stem", "01_final", "02_stem", "03_final"]
RESTART = PASSES + ["schedule.restart_passes=true", "quant=lsq_w2a4"]
# weight grids of the layers checked below: the 8-bit classifier, 2-bit blocks
GRIDS = {"head": (-128, 127), "body.0": (-2, 1)}


def _student(stage_dir) -> dict[str, torch.Tensor]:
    state = torch.load(stage_dir / "state.pt", map_location="cpu", weights_only=False)
    return {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}


def _run(tmp_path_factory, trained_teacher, h, overrides: list[str]):
    return h.distill_fresh(tmp_path_factory, trained_teacher, "passes", overrides)


@pytest.fixture(scope="module")
def two_pass_run(tmp_path_factory, trained_teacher, h):
    return _run(tmp_path_factory, trained_teacher, h, PASSES)


@pytest.fixture(scope="module")
def restart_run(tmp_path_factory, trained_teacher, h):
    return _run(tmp_path_factory, trained_teacher, h, RESTART)


def test_two_passes_run_every_stage_twice(two_pass_run, h):
    run_dir, metrics = two_pass_run
    assert [d.name for d in h.stage_dirs(run_dir)] == NAMES
    assert list(metrics["stages"]) == NAMES
    assert [s["samples"] for s in metrics["stages"].values()] == [32] * 4
    assert metrics["samples"] == 128
    assert not any("restart" in s for s in metrics["stages"].values())  # only when asked
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


def test_only_the_second_pass_restarts(restart_run, h):
    run_dir, metrics = restart_run
    student = h.load(run_dir / "student.pt")
    stages = metrics["stages"]
    assert list(stages) == ["00_stem", "01_final", "02_stem", "03_final"]
    assert [n for n, s in stages.items() if "restart" in s] == ["02_stem"]
    restart = stages["02_stem"]["restart"]
    quantizers = sum(1 for k in student["state_dict"] if k.endswith(".init_state"))
    assert quantizers > 10 and restart["steps"] == quantizers
    assert restart["copied"] == len(student["state_dict"]) - 2 * quantizers  # steps left out
    assert [s["restart"] for s in metrics["schedule"]] == [False, False, True, False]


@pytest.mark.parametrize("layer", sorted(GRIDS))
def test_untrained_layers_start_the_second_pass_on_the_first_pass_grid(restart_run, h, layer):
    run_dir, _ = restart_run
    before, after = (_student(d) for d in h.stage_dirs(run_dir)[1:3])  # 01_final, 02_stem
    qn, qp = GRIDS[layer]
    key = next(k for k in before if k.startswith(layer) and k.endswith("weight_quantizer.alpha"))
    prefix = key[: -len("weight_quantizer.alpha")]
    w, alpha = before[prefix + "weight"], before[key]
    # 02_stem trains the stem only: this layer holds the restart's copy, q(W) of 01_final
    expected = torch.round(torch.clamp(w / alpha, qn, qp)) * alpha
    assert not torch.equal(expected, w)
    torch.testing.assert_close(after[prefix + "weight"], expected, rtol=0, atol=1e-7)
    assert not torch.equal(after[key], alpha)  # the step was fitted anew


def test_a_restarted_pass_is_no_fresh_start(restart_run, h):
    """The restart keeps what the first pass learned: the classifier agrees with the teacher
    about as well after the second pass as after the first, far above chance."""
    run_dir, metrics = restart_run
    first, second = (metrics["stages"][n]["val/agreement"] for n in ("01_final", "03_final"))
    assert second >= first - 15 and second > 30
