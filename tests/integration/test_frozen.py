"""Frozen means frozen (DESIGN.md 3.4): the teacher's weights and BN statistics are
bit-identical after a distillation run, and a stage changes only what it trains; only the
stage's trainable parameters require gradients and reach its optimizer."""
from __future__ import annotations

import hashlib

import lightning.pytorch as pl
import pytest
import torch


class Inspect(pl.Callback):
    """Per stage: trainable names, optimizer parameter names, teacher mode and flags."""

    def __init__(self) -> None:
        self.trainable: dict[str, set[str]] = {}
        self.optimized: dict[str, set[str]] = {}
        self.teacher_states: list[tuple[bool, bool]] = []
        self.teacher_in_tree: list[bool] = []

    def on_train_start(self, trainer, pl_module) -> None:
        names = {id(p): n for n, p in pl_module.net.named_parameters()}
        stage = pl_module.stage.name
        self.trainable[stage] = {n for n, p in pl_module.net.named_parameters() if p.requires_grad}
        self.optimized[stage] = {names[id(p)] for opt in trainer.optimizers
                                 for group in opt.param_groups for p in group["params"]}
        teacher_params = {id(p) for p in pl_module.teacher.parameters()}
        self.teacher_in_tree.append(any(id(p) in teacher_params for p in pl_module.parameters()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        t = pl_module.teacher
        self.teacher_states.append((t.training, any(p.requires_grad for p in t.parameters())))


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, trained_teacher, h):
    import archnet.distill.build as build

    root = h.make_root(tmp_path_factory.mktemp("frozen"), trained_teacher)
    captured: dict = {}
    real_teacher, real_student = build.build_teacher, build.build_student

    def keep_teacher(cfg, *args, **kwargs):
        captured["teacher"] = real_teacher(cfg, *args, **kwargs)
        return captured["teacher"]

    def keep_student(cfg, teacher, *args, **kwargs):
        student = real_student(cfg, teacher, *args, **kwargs)
        captured["initial"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        captured["params"] = {f"student.{n}" for n, _ in student.named_parameters()}
        return student

    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(root))
    mp.setattr(build, "build_teacher", keep_teacher)
    mp.setattr(build, "build_student", keep_student)
    checkpoint = h.teacher_path(root)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    inspect = Inspect()
    try:
        metrics = h.distill(root / "run", h.SMOKE, extra_callbacks=[inspect])
    finally:
        mp.undo()
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest
    return root / "run", captured, inspect, checkpoint, metrics


def test_teacher_weights_and_bn_statistics_are_bit_identical(frozen_run, h):
    _, captured, inspect, checkpoint, _ = frozen_run
    teacher = captured["teacher"]
    saved = h.load(checkpoint)["state_dict"]
    state = teacher.state_dict()
    assert state.keys() == saved.keys()
    bn_stats = [k for k in saved if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(bn_stats) >= 3 * 8  # stem + 2 per block + projections: BN buffers are checked
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    # also during every training step, and never inside the trained module tree
    assert inspect.teacher_states and set(inspect.teacher_states) == {(False, False)}
    assert inspect.teacher_in_tree == [False, False]


def test_a_fresh_teacher_built_from_the_file_is_the_one_used(frozen_run, h, monkeypatch):
    run_dir, captured, _, checkpoint, _ = frozen_run
    from archnet.distill.build import build_teacher

    monkeypatch.setenv("ARCHNET_ROOT", str(checkpoint.parents[2]))
    fresh = build_teacher(h.compose("distill", h.SMOKE))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), captured["teacher"](x))


def test_stage_one_changes_only_the_stem(frozen_run, h):
    run_dir, captured, _, _, _ = frozen_run
    initial = captured["initial"]
    after = h.load(run_dir / "stages" / "00_stem" / "state.pt")
    assert set(after) == {f"student.{k}" for k in initial}
    changed = {k for k, v in initial.items() if not torch.equal(after[f"student.{k}"], v)}
    assert changed, "stage 1 trained nothing"
    assert all(k.startswith("stem.") for k in changed), sorted(changed)
    assert any(k.endswith("conv.weight") for k in changed)
    untouched = [k for k in initial if not k.startswith("stem.")]
    assert any(k.startswith("body.") for k in untouched) and any(
        k.startswith("head.") for k in untouched)
    # stage 2 (logits) trains everything: body and head move too
    final = h.load(run_dir / "stages" / "01_logits" / "state.pt")
    moved = {k.split(".")[1] for k, v in final.items() if not torch.equal(v, after[k])}
    assert {"body", "head"} <= moved


def test_only_trainable_parameters_require_grad_and_reach_the_optimizer(frozen_run):
    _, captured, inspect, _, metrics = frozen_run
    all_names = captured["params"]  # DistillNet names: the student, no adapters here
    stem = {n for n in all_names if n.startswith("student.stem.")}
    assert stem and stem < all_names
    assert inspect.trainable["00_stem"] == stem
    assert inspect.optimized["00_stem"] == stem
    assert inspect.trainable["01_logits"] == inspect.optimized["01_logits"]
    assert inspect.optimized["01_logits"] == all_names
    assert metrics["stages"]["00_stem"]["trainable_params"] == sum(
        captured["initial"][n[len("student."):]].numel() for n in stem)
