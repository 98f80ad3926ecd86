"""Manifest: seeded, rank-independent, hashed, saved into the run dir."""
from __future__ import annotations

import pytest

from archnet.data.manifest import Manifest, build_manifest, paths_sha256
from archnet.errors import ConfigError

PATHS = [f"n{c:02d}/img_{i:03d}.JPEG" for c in range(10) for i in range(50)]


def test_same_seed_same_manifest_other_seed_other_manifest():
    a = build_manifest(PATHS, n=100, seed=1, holdout=50)
    b = build_manifest(list(reversed(PATHS)), n=100, seed=1, holdout=50)  # order-independent
    c = build_manifest(PATHS, n=100, seed=2, holdout=50)
    assert a == b and a.sha256 == b.sha256
    assert c.sha256 != a.sha256 and c.train != a.train
    assert c.holdout == a.holdout  # the checkpoint-selection slice does not move with the seed
    assert a.sha256 == paths_sha256(a.train_paths(PATHS))
    assert a.file_list_sha256 == paths_sha256(PATHS)


def test_train_and_holdout_are_disjoint_and_sized():
    m = build_manifest(PATHS, n=300, seed=0, holdout=100, holdout_seed=7)
    assert len(m.train) == 300 and len(m.holdout) == 100
    assert not set(m.train) & set(m.holdout)
    assert set(m.train_paths(PATHS)) <= set(PATHS)
    everything = build_manifest(PATHS, n=0, seed=0, holdout=100, holdout_seed=7)
    assert len(everything.train) == 400


def test_save_load_round_trip(tmp_path):
    m = build_manifest(PATHS, n=10, seed=3, holdout=5)
    path = m.save(tmp_path / "run")
    assert path.name == "manifest.json"
    assert Manifest.load(tmp_path / "run", PATHS) == m
    with pytest.raises(ConfigError, match="different train file list"):
        Manifest.load(tmp_path / "run", PATHS[:-1])


def test_too_many_samples_is_a_config_error():
    with pytest.raises(ConfigError, match="at most"):
        build_manifest(PATHS, n=480, seed=0, holdout=30)
    with pytest.raises(ConfigError, match="unique"):
        build_manifest(PATHS + PATHS[:1], n=1, seed=0)
