"""Stage specs and the compact schedules that expand into them (DESIGN.md 3.2).

A stage is data: which taps are supervised with which loss and weight, how many samples it
sees, and its optimizer and LR schedule. ``progressive`` is the paper's (reference 3.2):
with feature taps ``0..n-1``, stage ``k < n`` minimises

    L_k = sum_{i<=k} decay^(k-i) * MSE(s_i, t_i)

and a final stage minimises ``sum_{i<n} decay^(n-i) * MSE(s_i, t_i) + w * (1 - cos(z_s, z_t))``;
``passes=p`` runs those ``n + 1`` stages ``p`` times in a row (stage indices number on);
``restart_passes`` marks the first stage of every later pass ``restart`` (see :class:`StageSpec`).
Budgets are samples (global, all ranks together); ``scale`` multiplies every budget.
``step_lr_scale`` multiplies the learning rate of the LSQ quantizer steps (0: they stay where
initialisation put them): Adam moves every parameter by about ``lr`` per step whatever its
size, and a 2-bit weight step is about 0.05 (an 8-bit classifier step 0.004).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from archnet.distill.losses import LOSSES
from archnet.errors import ConfigError
from archnet.models.taps import LOGITS


@dataclass(frozen=True)
class LossTerm:
    tap: str
    loss: str
    weight: float


@dataclass
class StageSpec:
    """One ``Trainer.fit``: loss terms, a sample budget, optimizer and LR schedule configs.

    ``restart``: before this stage the student restarts from itself as ``distill.init_student``
    starts one from another run (weights ``<- q(W)``, every LSQ step fitted anew, the BNs
    calibrated when ``distill.calibrate_images`` is set, the adapters rebuilt)."""

    name: str
    terms: list[LossTerm]
    samples: int
    optimizer: dict[str, Any] = field(default_factory=dict)
    lr_scheduler: dict[str, Any] | None = None
    trainable: str | list[str] = "reachable"
    step_lr_scale: float = 1.0
    restart: bool = False

    @property
    def taps(self) -> list[str]:
        return [t.tap for t in self.terms]

    def describe(self) -> str:
        terms = " + ".join(f"{t.weight:.3g}*{t.loss}({t.tap})" for t in self.terms)
        return f"{self.name}: {self.samples} samples, {terms}"


def _check_terms(stage: StageSpec, tap_names: list[str], losses: Sequence[str]) -> None:
    for term in stage.terms:
        if term.tap not in tap_names:
            raise ConfigError(f"schedule[{stage.name}].tap", term.tap, tap_names)
        if term.loss not in losses:
            raise ConfigError(f"schedule[{stage.name}].loss", term.loss, sorted(losses))
        if not (term.weight >= 0 and math.isfinite(term.weight)):
            raise ConfigError(f"schedule[{stage.name}].weight", term.weight, "a finite number >= 0")
    if stage.samples <= 0:
        raise ConfigError(f"schedule[{stage.name}].samples", stage.samples, "a positive integer")
    if isinstance(stage.step_lr_scale, bool) or not isinstance(stage.step_lr_scale, (int, float)) \
            or not (stage.step_lr_scale >= 0 and math.isfinite(stage.step_lr_scale)):
        raise ConfigError(f"schedule[{stage.name}].step_lr_scale", stage.step_lr_scale, "a finite number >= 0")
    if not isinstance(stage.restart, bool):
        raise ConfigError(f"schedule[{stage.name}].restart", stage.restart, "true or false")


def check_budgets(budgets: dict[str, Any], scale: float, decay: float) -> None:
    """Sample budgets are positive integers, ``scale > 0`` and ``0 < decay <= 1``."""
    for key, value in budgets.items():
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"schedule.{key}", value, "a positive number of samples")
    if not scale > 0:
        raise ConfigError("schedule.scale", scale, "a number > 0")
    if not 0 < decay <= 1:
        raise ConfigError("schedule.decay", decay, "a number in (0, 1]")


def progressive(tap_names: list[str], first_samples: int, middle_samples: int, final_samples: int,
                decay: float = 0.8, feature_loss: str = "mse", logit_loss: str = "cosine",
                logit_weight: float = 1.0, scale: float = 1.0, optimizer: dict | None = None,
                lr_scheduler: dict | None = None, taps: list[str] | None = None,
                stage_overrides: dict | None = None, passes: int = 1,
                step_lr_scale: float = 1.0, restart_passes: bool = False) -> list[StageSpec]:
    """The paper's progressive schedule over ``taps`` (default: every tap but the logits),
    ``passes`` times: pass ``p``'s stage ``k`` is named ``{p*(n+1)+k:02d}_{tap}``; with
    ``restart_passes`` every pass after the first starts with a restart (:class:`StageSpec`)."""
    features = list(taps) if taps is not None else [t for t in tap_names if t != LOGITS]
    for t in features:
        if t not in tap_names:
            raise ConfigError("schedule.taps", t, tap_names)
    check_budgets({"first_samples": first_samples, "middle_samples": middle_samples,
                   "final_samples": final_samples}, scale, decay)
    if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
        raise ConfigError("schedule.passes", passes, "a positive integer")
    if not isinstance(restart_passes, bool):
        raise ConfigError("schedule.restart_passes", restart_passes, "true or false")
    common = dict(optimizer=dict(optimizer or {}), lr_scheduler=dict(lr_scheduler) if lr_scheduler else None,
                  step_lr_scale=step_lr_scale)
    n = len(features)
    stages = []
    for first in range(0, passes * (n + 1), n + 1):
        for k, tap in enumerate(features):
            budget = first_samples if k == 0 else middle_samples
            terms = [LossTerm(features[i], feature_loss, decay ** (k - i)) for i in range(k + 1)]
            stages.append(StageSpec(f"{first + k:02d}_{tap}", terms, int(budget * scale), **common,
                                    restart=restart_passes and first > 0 and k == 0))
        final_terms = [LossTerm(features[i], feature_loss, decay ** (n - i)) for i in range(n)]
        final_terms.append(LossTerm(LOGITS, logit_loss, logit_weight))
        stages.append(StageSpec(f"{first + n:02d}_final", final_terms, int(final_samples * scale), **common))
    return finalize(stages, tap_names, stage_overrides)


def single(tap_names: list[str], samples: int, terms: list[dict], scale: float = 1.0,
           optimizer: dict | None = None, lr_scheduler: dict | None = None,
           name: str = "all", stage_overrides: dict | None = None,
           step_lr_scale: float = 1.0) -> list[StageSpec]:
    """One stage with explicit ``terms`` (``[{tap, loss, weight}, ...]``)."""
    spec = StageSpec(f"00_{name}", [LossTerm(**t) for t in terms], int(samples * scale),
                     dict(optimizer or {}), dict(lr_scheduler) if lr_scheduler else None,
                     step_lr_scale=step_lr_scale)
    return finalize([spec], tap_names, stage_overrides)


def explicit(tap_names: list[str], stages: list[dict], scale: float = 1.0,
             optimizer: dict | None = None, lr_scheduler: dict | None = None,
             stage_overrides: dict | None = None, step_lr_scale: float = 1.0) -> list[StageSpec]:
    """Stages written out in the config: ``[{name, samples, terms: [{tap, loss, weight}]}]``
    (optional per stage: ``optimizer``, ``lr_scheduler``, ``trainable``, ``step_lr_scale``,
    ``restart``)."""
    specs = [StageSpec(f"{i:02d}_{s['name']}", [LossTerm(**t) for t in s["terms"]],
                       int(s["samples"] * scale), dict(s.get("optimizer", optimizer) or {}),
                       s.get("lr_scheduler", lr_scheduler), s.get("trainable", "reachable"),
                       s.get("step_lr_scale", step_lr_scale), s.get("restart", False))
             for i, s in enumerate(stages)]
    return finalize(specs, tap_names, stage_overrides)


def finalize(stages: list[StageSpec], tap_names: list[str], overrides: dict | None,
             losses: Sequence[str] | None = None) -> list[StageSpec]:
    """Apply ``stage_overrides`` ({stage name: {field: value}}) and validate every stage.

    ``losses``: the loss names the task interprets (default: :data:`LOSSES`, the image task's).
    """
    overrides = dict(overrides or {})
    by_name = {s.name: i for i, s in enumerate(stages)}
    for name, fields in overrides.items():
        if name not in by_name:
            raise ConfigError("schedule.stage_overrides", name, list(by_name))
        i = by_name[name]
        fields = dict(fields)
        if "terms" in fields:
            fields["terms"] = [LossTerm(**t) for t in fields["terms"]]
        stages[i] = replace(stages[i], **fields)
    for s in stages:
        _check_terms(s, tap_names, list(LOSSES) if losses is None else list(losses))
    return stages


def spread(stages: list[StageSpec], limit: int | None) -> list[StageSpec]:
    """At most ``limit`` stages for smoke runs: the first, the final and evenly spaced ones
    between (indices ``round(i * (n - 1) / (limit - 1))``); every stage when ``limit`` is
    None or not smaller than ``n``."""
    n = len(stages)
    if limit is None or limit >= n:
        return stages
    keep = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [stages[i] for i in keep]


def stage_table(stages: list[StageSpec]) -> list[dict[str, Any]]:
    """Plain rows (for printing and metrics.json)."""
    return [dict(asdict(s), terms=[asdict(t) for t in s.terms]) for s in stages]
