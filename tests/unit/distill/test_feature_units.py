"""``distill.feature_units``: student feature taps compared raw or in BN units (``s / a``)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from archnet.distill.build import feature_scale
from archnet.distill.schedule import LossTerm
from archnet.distill.tasks import ImageTask
from archnet.errors import ConfigError


def _taps() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    teacher = {"stem": torch.rand(4, 3, 8, 8, generator=g) * 3, "logits": torch.randn(4, 10, generator=g)}
    # a fixed-range student that matches the teacher exactly: clip(0.1 t, 0, 1) with t < 10
    student = {"stem": 0.1 * teacher["stem"], "logits": 0.5 * teacher["logits"]}
    return student, teacher


def _loss(task: ImageTask, terms: list[LossTerm]) -> dict[str, float]:
    s, t = _taps()
    adapt = lambda tap, x, y: x  # noqa: E731  (no adapters)
    total, parts = task.loss(terms, s, t, (torch.zeros(4, 3, 8, 8),), adapt)
    return {"total": float(total), **{k: float(v) for k, v in parts.items()}}


def test_bn_units_compare_the_rescaled_feature_tap():
    terms = [LossTerm("stem", "mse", 1.0)]
    _, t = _taps()
    raw = _loss(ImageTask(lambda x: x), terms)
    bn = _loss(ImageTask(lambda x: x, feature_scale=0.1), terms)
    assert bn["total"] == pytest.approx(0.0, abs=1e-10)
    # raw: MSE(0.1 t, t) = 0.81 mean(t^2)
    assert raw["total"] == pytest.approx(0.81 * float(t["stem"].pow(2).mean()), rel=1e-5)


def test_bn_units_leave_the_logits_alone():
    terms = [LossTerm("logits", "mse", 1.0)]
    _, t = _taps()
    expected = 0.25 * float(t["logits"].pow(2).mean())  # MSE(0.5 z, z)
    for scale in (1.0, 0.1):
        got = _loss(ImageTask(lambda x: x, feature_scale=scale), terms)
        assert got["mse/logits"] == pytest.approx(expected, rel=1e-5)


def test_feature_scale_must_be_positive():
    with pytest.raises(ValueError, match="feature_scale"):
        ImageTask(lambda x: x, feature_scale=0.0)


def _cfg(units: str, act: dict, task: dict | None = None):
    return OmegaConf.create({
        "distill": {"feature_units": units},
        "data": {"task": task} if task else {},
        "quant": {"name": "q", "weight": {"method": "none", "bits": 32},
                  "act": act, "head_weight_bits": 8},
    })


FIXED = {"method": "fixed", "bits": 4, "act_multiplier": 0.1}
LSQ = {"method": "lsq", "bits": 4}
FLOAT = {"method": "none", "bits": 32}


@pytest.mark.parametrize("units, act, expected", [
    ("raw", FIXED, 1.0), ("bn", FIXED, 0.1), ("bn", {**FIXED, "act_multiplier": 0.4}, 0.4),
    ("bn", LSQ, 1.0), ("bn", FLOAT, 1.0), ("raw", LSQ, 1.0),
])
def test_feature_scale_from_the_config(units, act, expected):
    assert feature_scale(_cfg(units, act)) == pytest.approx(expected)


def test_feature_scale_rejects_unknown_units():
    with pytest.raises(ConfigError, match="distill.feature_units='nope'"):
        feature_scale(_cfg("nope", FIXED))


def test_bn_units_only_rescale_image_tasks():
    task = {"_target_": "archnet.distill.translation.translation_task"}
    with pytest.raises(ConfigError, match="raw with data.task"):
        feature_scale(_cfg("bn", FIXED, task))
    assert feature_scale(_cfg("bn", LSQ, task)) == 1.0  # nothing to rescale
