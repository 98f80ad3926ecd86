"""Torch-op transforms: shapes, formulas, determinism under a generator."""
from __future__ import annotations

import numpy as np
import torch

from archnet.data import transforms as T


def _img(n: int | None = None, h: int = 20, w: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (3, h, w) if n is None else (n, 3, h, w)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def test_from_hwc_and_float_and_normalize():
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    x = T.from_hwc(a)
    assert x.shape == (3, 2, 3) and x[1, 0, 0] == a[0, 0, 1]
    f = T.to_float(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert f.dtype == torch.float32 and f.tolist() == [[[0.0, 1.0]]]
    y = T.normalize(torch.full((3, 1, 1), 255, dtype=torch.uint8))
    expect = [(1 - m) / s for m, s in zip(T.IMAGENET_MEAN, T.IMAGENET_STD)]
    torch.testing.assert_close(y.flatten(), torch.tensor(expect))


def test_resize_shorter_and_center_crop():
    x = _img(h=20, w=30)
    y = T.resize_shorter(x, 10)
    assert y.shape == (3, 10, 15) and y.dtype == torch.uint8
    assert T.resize_shorter(_img(2, 30, 20), 10).shape == (2, 3, 15, 10)
    c = T.center_crop(x, 10)
    assert torch.equal(c, x[:, 5:15, 10:20])
    flat = torch.full((3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(T.resize_shorter(flat, 4), torch.full((3, 4, 4), 77, dtype=torch.uint8))


def test_random_ops_are_deterministic_given_a_generator():
    x = _img(4)
    t = T.small_train(16, padding=4)
    a = t(x, torch.Generator().manual_seed(5))
    b = t(x, torch.Generator().manual_seed(5))
    c = t(x, torch.Generator().manual_seed(6))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    single = T.random_crop(_img(), 8, padding=2, generator=torch.Generator().manual_seed(1))
    assert single.shape == (3, 8, 8)


def test_hflip_probability_and_per_image_draws():
    x = _img(64, 4, 4)
    assert torch.equal(T.random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(T.random_hflip(x, p=0.0), x)
    y = T.random_hflip(x, 0.5, torch.Generator().manual_seed(0))
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(y, x)]
    assert 10 < sum(flipped) < 54


def test_padding_is_zero_and_crop_inside():
    x = torch.full((3, 4, 4), 9, dtype=torch.uint8)
    y = T.random_crop(x, 8, padding=2)
    assert torch.equal(y[:, 2:6, 2:6], x) and int(y.sum()) == 9 * 3 * 16


def test_imagenet_pipelines():
    x = _img(h=300, w=400)
    assert T.imagenet_eval()(x).shape == (3, 224, 224)
    assert T.imagenet_train()(x, torch.Generator().manual_seed(0)).shape == (3, 224, 224)
