"""Decode cache: round trip, reuse without decoding, key changes with size."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from awkward_images import GOOD

import archnet.data.decode_cache as dc
from archnet.data.image_folder import decode_rgb, scan_folder


def test_round_trip_and_reuse(awkward_folder, tmp_path, monkeypatch):
    index = scan_folder(awkward_folder, "train")
    data = dc.decode_to_cache(index, 16, tmp_path / "cache", max_bad_fraction=0.5)
    assert data.images.shape == (len(GOOD), 16, 16, 3) and data.images.dtype == np.uint8
    assert len(data.report.bad) == 3 and len(data.paths) == len(GOOD)
    for i, rel in enumerate(data.paths):
        np.testing.assert_array_equal(data.images[i], decode_rgb(index.base / rel, 16))
        assert data.labels[i] == index.labels[index.paths.index(rel)]
    x, y = data[0]
    assert tuple(x.shape) == (3, 16, 16) and y == data.labels[0]
    entries = [p.name for p in (tmp_path / "cache").iterdir()]
    assert entries == [dc.cache_key(index.paths, index.labels, 16)]  # no temporary folder left

    def fail(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(dc, "try_decode", fail)
    again = dc.decode_to_cache(index, 16, tmp_path / "cache", max_bad_fraction=0.5)
    assert again.entry == data.entry and again.paths == data.paths
    clone = pickle.loads(pickle.dumps(again))
    assert clone._images is None and len(clone) == len(GOOD)
    np.testing.assert_array_equal(clone[2][0].numpy(), again[2][0].numpy())
    with pytest.raises(AssertionError, match="decoded again"):
        dc.decode_to_cache(index, 24, tmp_path / "cache", max_bad_fraction=0.5)


def test_threads_give_the_same_bytes(awkward_folder, tmp_path):
    index = scan_folder(awkward_folder, "train", classes=["n01"])
    a = dc.decode_to_cache(index, 12, tmp_path / "a")
    b = dc.decode_to_cache(index, 12, tmp_path / "b", num_workers=2)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))


def test_key_depends_on_list_labels_and_size():
    k = dc.cache_key(["a", "b"], [0, 1], 64)
    assert k == dc.cache_key(["a", "b"], [0, 1], 64)
    assert len({k, dc.cache_key(["a", "c"], [0, 1], 64), dc.cache_key(["a", "b"], [1, 1], 64),
                dc.cache_key(["a", "b"], [0, 1], 32)}) == 4
