"""Schedules expand into stage specs (DESIGN.md 3.2): the paper's progressive recipe,
explicit stages, overrides by stage name, budget scaling and validation."""
from __future__ import annotations

import pytest

from archnet.distill.schedule import LossTerm, StageSpec, explicit, progressive, single, stage_table
from archnet.errors import ConfigError
from archnet.models.resnet import tiny_resnet

TAPS = tiny_resnet().tap_names
FEATURES = [t for t in TAPS if t != "logits"]
BUDGETS = dict(first_samples=1000, middle_samples=300, final_samples=5000)


def test_tiny_resnet_taps():
    assert TAPS[0] == "stem" and TAPS[-1] == "logits"
    assert FEATURES == ["stem"] + [f"layer{i}.0.{s}" for i in (1, 2, 3)
                                   for s in ("conv1", "conv2", "out")]


def test_progressive_stage_count_names_and_budgets():
    stages = progressive(TAPS, **BUDGETS)
    n = len(FEATURES)
    assert len(stages) == n + 1
    assert [s.name for s in stages] == [f"{k:02d}_{t}" for k, t in enumerate(FEATURES)] + [
        f"{n:02d}_final"]
    assert [s.samples for s in stages] == [1000] + [300] * (n - 1) + [5000]
    assert all(isinstance(s, StageSpec) for s in stages)


@pytest.mark.parametrize("decay", [0.8, 0.5, 1.0])
def test_progressive_weights_decay_towards_earlier_taps(decay):
    stages = progressive(TAPS, **BUDGETS, decay=decay)
    n = len(FEATURES)
    for k, stage in enumerate(stages[:-1]):
        assert [t.tap for t in stage.terms] == FEATURES[:k + 1]
        assert all(t.loss == "mse" for t in stage.terms)
        for i, term in enumerate(stage.terms):
            assert term.weight == pytest.approx(decay ** (k - i), rel=1e-12)
        assert stage.terms[-1].weight == 1.0  # the newest tap has full weight
    final = stages[-1]
    assert [t.tap for t in final.terms] == FEATURES + ["logits"]
    for i, term in enumerate(final.terms[:-1]):
        assert term.weight == pytest.approx(decay ** (n - i), rel=1e-12)
        assert term.loss == "mse"
    assert final.terms[-1] == LossTerm("logits", "cosine", 1.0)


def test_progressive_losses_logit_weight_and_optimizer():
    opt = {"_target_": "torch.optim.Adam", "lr": 0.01}
    stages = progressive(TAPS, **BUDGETS, feature_loss="kl", logit_loss="mse", logit_weight=2.5,
                         optimizer=opt, lr_scheduler=None)
    assert {t.loss for s in stages for t in s.terms if t.tap != "logits"} == {"kl"}
    assert stages[-1].terms[-1] == LossTerm("logits", "mse", 2.5)
    assert all(s.optimizer == opt and s.lr_scheduler is None for s in stages)
    assert all(s.optimizer is not opt for s in stages)  # the caller's dict is copied


def test_progressive_subset_of_taps():
    taps = ["stem", "layer1.0.out", "layer3.0.out"]
    stages = progressive(TAPS, **BUDGETS, taps=taps)
    assert [s.name for s in stages] == ["00_stem", "01_layer1.0.out", "02_layer3.0.out", "03_final"]
    assert [t.tap for t in stages[2].terms] == taps
    assert [t.weight for t in stages[-1].terms] == pytest.approx([0.8**3, 0.8**2, 0.8, 1.0])


@pytest.mark.parametrize("scale", [0.5, 0.01, 2.0])
def test_scale_multiplies_every_budget(scale):
    base = progressive(TAPS, **BUDGETS)
    scaled = progressive(TAPS, **BUDGETS, scale=scale)
    assert [s.samples for s in scaled] == [int(b.samples * scale) for b in base]
    smoke = [dict(name="a", samples=100, terms=[dict(tap="stem", loss="mse", weight=1.0)])]
    assert explicit(TAPS, smoke, scale=scale)[0].samples == int(100 * scale)
    assert single(TAPS, 100, [dict(tap="logits", loss="cosine", weight=1.0)],
                  scale=scale)[0].samples == int(100 * scale)


@pytest.mark.parametrize("passes", [2, 3])
def test_passes_repeat_the_whole_schedule_with_indices_numbering_on(passes):
    one = progressive(TAPS, **BUDGETS)
    stages = progressive(TAPS, **BUDGETS, passes=passes)
    n1 = len(one)
    assert len(stages) == passes * n1
    assert len({s.name for s in stages}) == len(stages)
    for p in range(passes):
        for k, (s, base) in enumerate(zip(stages[p * n1:(p + 1) * n1], one)):
            assert s.name == f"{p * n1 + k:02d}_{base.name[3:]}"
            assert (s.terms, s.samples, s.optimizer, s.lr_scheduler) == (
                base.terms, base.samples, base.optimizer, base.lr_scheduler)
    assert stages[2 * n1 - 1].name == f"{2 * n1 - 1:02d}_final"


def test_restart_passes_mark_the_first_stage_of_every_later_pass():
    n1 = len(progressive(TAPS, **BUDGETS))
    assert not any(s.restart for s in progressive(TAPS, **BUDGETS, passes=3))
    stages = progressive(TAPS, **BUDGETS, passes=3, restart_passes=True)
    assert [i for i, s in enumerate(stages) if s.restart] == [n1, 2 * n1]
    assert not any(s.restart for s in progressive(TAPS, **BUDGETS, restart_passes=True))
    explicit_stages = [dict(name="a", samples=10, terms=[dict(tap="stem", loss="mse", weight=1.0)]),
                       dict(name="b", samples=10, restart=True,
                            terms=[dict(tap="stem", loss="mse", weight=1.0)])]
    assert [s.restart for s in explicit(TAPS, explicit_stages)] == [False, True]


def test_stage_overrides_reach_one_pass_only():
    stages = progressive(TAPS, **BUDGETS, passes=2, stage_overrides={"11_stem": {"samples": 5}})
    assert stages[0].samples == 1000 and stages[11].samples == 5


def test_stage_overrides_by_name():
    overrides = {"01_layer1.0.conv1": {"samples": 77},
                 "10_final": {"terms": [{"tap": "logits", "loss": "kl", "weight": 3.0}],
                              "trainable": "all"}}
    stages = progressive(TAPS, **BUDGETS, stage_overrides=overrides)
    base = progressive(TAPS, **BUDGETS)
    assert stages[1].samples == 77 and stages[1].terms == base[1].terms
    assert stages[-1].terms == [LossTerm("logits", "kl", 3.0)] and stages[-1].trainable == "all"
    untouched = [i for i in range(len(stages)) if i not in (1, len(stages) - 1)]
    assert all(stages[i] == base[i] for i in untouched)


def test_explicit_smoke_like_schedule():
    stages = explicit(TAPS, [
        dict(name="stem", samples=256, terms=[dict(tap="stem", loss="mse", weight=1.0)]),
        dict(name="logits", samples=128, trainable=["student.head.*"],
             terms=[dict(tap="stem", loss="mse", weight=0.8),
                    dict(tap="logits", loss="cosine", weight=1.0)])],
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    assert [s.name for s in stages] == ["00_stem", "01_logits"]
    assert stages[0].taps == ["stem"] and stages[1].taps == ["stem", "logits"]
    assert stages[1].trainable == ["student.head.*"] and stages[0].trainable == "reachable"
    assert stages[0].optimizer["_target_"] == "torch.optim.SGD"
    assert "00_stem: 256 samples, 1*mse(stem)" == stages[0].describe()


def test_stage_table_is_plain_data():
    rows = stage_table(progressive(TAPS, **BUDGETS))
    assert rows[0]["terms"] == [{"tap": "stem", "loss": "mse", "weight": 1.0}]
    assert set(rows[0]) == {"name", "terms", "samples", "optimizer", "lr_scheduler", "trainable",
                           "step_lr_scale", "restart"}


@pytest.mark.parametrize("kwargs, key", [
    (dict(first_samples=-5), "schedule.first_samples"),
    (dict(middle_samples=0), "schedule.middle_samples"),
    (dict(final_samples=1.5), "schedule.final_samples"),
    (dict(scale=0), "schedule.scale"),
    (dict(decay=0.0), "schedule.decay"),
    (dict(decay=1.5), "schedule.decay"),
    (dict(taps=["nope"]), "schedule.taps"),
    (dict(feature_loss="nope"), "schedule[00_stem].loss"),
    (dict(logit_loss="nope"), "schedule[10_final].loss"),
    (dict(logit_weight=-1.0), "schedule[10_final].weight"),
    (dict(logit_weight=float("nan")), "schedule[10_final].weight"),
    (dict(stage_overrides={"99_nope": {"samples": 1}}), "schedule.stage_overrides"),
    (dict(stage_overrides={"00_stem": {"samples": 0}}), "schedule[00_stem].samples"),
    (dict(scale=0.0001), "schedule[00_stem].samples"),
    (dict(passes=0), "schedule.passes"),
    (dict(passes=1.5), "schedule.passes"),
    (dict(passes=True), "schedule.passes"),
    (dict(passes=2, restart_passes="yes"), "schedule.restart_passes"),
    (dict(stage_overrides={"00_stem": {"restart": 1}}), "schedule[00_stem].restart"),
])
def test_bad_progressive_raises_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        progressive(TAPS, **{**BUDGETS, **kwargs})
    assert info.value.key == key


def test_explicit_unknown_tap():
    with pytest.raises(ConfigError) as info:
        explicit(TAPS, [dict(name="x", samples=10, terms=[dict(tap="layer9.0.out", loss="mse",
                                                               weight=1.0)])])
    assert info.value.key == "schedule[00_x].tap" and info.value.value == "layer9.0.out"


def test_composed_progressive_schedule(compose_cfg, monkeypatch, tmp_path):
    from archnet.distill.build import build_schedule

    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    cfg = compose_cfg("distill", ["schedule.scale=0.5"])
    stages = build_schedule(cfg, TAPS)
    paper = progressive(TAPS, 491520, 81920, 41861120, scale=0.5)
    assert [(s.name, s.samples, s.terms) for s in stages] == [
        (s.name, s.samples, s.terms) for s in paper]
    assert stages[0].optimizer["_target_"] == "torch.optim.Adam"
    assert stages[0].lr_scheduler["period_samples"] == 81920


def test_spread_keeps_first_final_and_evenly_spaced_stages():
    from archnet.distill.schedule import StageSpec, spread

    stages = [StageSpec(f"{i:02d}", [], 1) for i in range(26)]
    assert [s.name for s in spread(stages, 4)] == ["00", "08", "17", "25"]
    assert [s.name for s in spread(stages, 2)] == ["00", "25"]
    assert spread(stages, None) == stages and spread(stages, 26) == stages and spread(stages, 99) == stages
