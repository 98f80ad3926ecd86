"""``distill.precise_bn_images`` end to end: after the last stage the saved student's BN
statistics are the population statistics of the seeded training images, computed from the
last stage's weights, and metrics.json records the held-out agreement before and after."""
from __future__ import annotations

import pytest
import torch

from archnet.distill import build
from archnet.distill.precise_bn import BATCH, population_statistics

RUN = ["schedule=progressive", "schedule.taps=[stem]", "schedule.first_samples=32",
       "schedule.middle_samples=32", "schedule.final_samples=32", "schedule.lr_scheduler=null",
       "distill.batch_size=16", "distill.chunk_steps=2", "logger=none", "progress=false",
       "debug=fast", "schedule.scale=1", "distill.precise_bn_images=96", "distill.precise_bn_keep=always"]


@pytest.fixture(scope="module")
def precise_run(tmp_path_factory, trained_teacher, h):
    run_dir, metrics = h.distill_fresh(tmp_path_factory, trained_teacher, "precise", RUN)
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(run_dir.parent))
    try:
        cfg = h.compose("distill", RUN)
    finally:
        mp.undo()
    return run_dir, metrics, cfg


def test_saved_student_has_the_population_statistics(precise_run, h):
    run_dir, metrics, cfg = precise_run
    record = metrics["precise_bn"]
    assert record["images"] == 96 and record["kept"] is True
    assert 0.0 <= record["agreement_before"] <= 100.0 and 0.0 <= record["agreement_after"] <= 100.0
    saved = h.load(run_dir / "student.pt")["state_dict"]
    state = h.load(h.stage_dirs(run_dir)[-1] / "state.pt")  # the last stage's weights
    dm = build.build_data(cfg, cfg.distill.batch_size)
    task = build.build_task(cfg, dm)
    expected = build.build_student(cfg, build.build_teacher(cfg, load=False), dm.input_shape)
    expected.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})
    assert population_statistics(expected, build.seeded_batches(cfg, dm, task, 96, BATCH)) == 96
    bns = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert bns
    changed = 0
    for k in bns:
        assert torch.allclose(saved[k], expected.state_dict()[k], atol=1e-5), k
        changed += not torch.allclose(saved[k], state["student." + k], atol=1e-5)
    assert changed > 0  # the training-time statistics were replaced
    weights = [k for k in saved if k.endswith("weight")]
    assert weights and all(torch.equal(saved[k], state["student." + k]) for k in weights)
