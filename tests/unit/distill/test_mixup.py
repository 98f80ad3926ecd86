"""Batch mixup: the formula, replayable draws keyed by (seed, stage, step), the hook builder."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from archnet.data.folder_module import BatchFlipCrop
from archnet.distill.mixup import BatchMixup, Chain, build_augment
from archnet.errors import ConfigError


def test_mixes_with_a_permutation_of_the_batch():
    x = torch.randn(6, 3, 4, 4)
    mix = BatchMixup(p=1.0, alpha=1.0, seed=3, stage=2)
    lam, perm = mix.draw(6, step=7)
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(mix(x, 7), lam * x + (1 - lam) * x[torch.from_numpy(perm)])


def test_draws_depend_only_on_seed_stage_step():
    x = torch.randn(8, 3, 2, 2)
    a, b = BatchMixup(1.0, seed=0, stage=1), BatchMixup(1.0, seed=0, stage=1)
    b(x, 3)  # an earlier call leaves no state behind: a resumed run replays the same draws
    assert torch.equal(a(x, 5), b(x, 5))
    assert not torch.equal(a(x, 5), a(x, 6))
    assert not torch.equal(a(x, 5), BatchMixup(1.0, seed=0, stage=2)(x, 5))


def test_probability_per_batch():
    mix = BatchMixup(p=0.1, seed=0)
    rate = sum(mix.draw(4, s) is not None for s in range(4000)) / 4000
    assert 0.08 < rate < 0.12
    x = torch.randn(4, 3, 2, 2)
    assert all(BatchMixup(p=0.0)(x, s) is x for s in range(20))
    with pytest.raises(ConfigError, match="distill.mixup.p"):
        BatchMixup(p=1.5)
    with pytest.raises(ConfigError, match="distill.mixup.alpha"):
        BatchMixup(alpha=0.0)


class _DM:
    def batch_augment(self, stage: int) -> BatchFlipCrop:
        return BatchFlipCrop(padding=2, hflip=True, seed=0, stage=stage)


def test_build_augment_composes_data_then_mixup():
    cfg = OmegaConf.create({"seed": 4, "distill": {"mixup": {"p": 0.1, "alpha": 1.0}}})
    aug = build_augment(cfg, _DM(), stage=3)
    assert isinstance(aug, Chain) and isinstance(aug.steps[1], BatchMixup)
    assert aug.steps[1].stage == 3 and aug.steps[1].seed == 4
    x = torch.randn(5, 3, 8, 8)
    assert aug(x, 11).shape == x.shape and torch.equal(aug(x, 11), aug(x, 11))
    assert build_augment(OmegaConf.create({"seed": 0, "distill": {"mixup": None}}), object(), 0) is None
    only_mix = build_augment(cfg, object(), 0)
    assert isinstance(only_mix, BatchMixup)
