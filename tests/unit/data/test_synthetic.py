"""The seeded synthetic data set: reproducible bytes, balanced classes, and no shortcut
through mean colour (class information is in shape and texture only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archnet.data.synthetic import NUM_CLASSES, SyntheticDataModule, generate
from archnet.errors import ConfigError


def test_same_seed_same_bytes():
    a_img, a_lab = generate(60, seed=3, split="train")
    b_img, b_lab = generate(60, seed=3, split="train")
    assert a_img.dtype == np.uint8 and a_img.shape == (60, 32, 32, 3)
    assert a_lab.dtype == np.int64 and a_lab.shape == (60,)
    assert a_img.tobytes() == b_img.tobytes() and np.array_equal(a_lab, b_lab)


def test_other_seed_or_split_differs():
    base, _ = generate(40, seed=0, split="train")
    other_seed, _ = generate(40, seed=1, split="train")
    other_split, _ = generate(40, seed=0, split="test")
    assert base.tobytes() != other_seed.tobytes()
    assert base.tobytes() != other_split.tobytes()
    # not just a permutation of the same images
    assert not any(np.array_equal(base[0], img) for img in other_seed)


def test_images_are_varied_and_use_the_range():
    img, _ = generate(50, seed=0)
    assert img.min() < 20
    assert img.max() > 235
    flat = img.reshape(50, -1).astype(np.int32)
    assert len({row.tobytes() for row in img}) == 50
    assert flat.std(axis=1).min() > 5  # every image shows a visible pattern


@pytest.mark.parametrize("n", [10, 100, 123])
def test_class_balance(n):
    _, labels = generate(n, seed=0)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES


def test_labels_are_shuffled():
    _, labels = generate(100, seed=0)
    assert not np.array_equal(labels, np.arange(100) % NUM_CLASSES)


def test_mean_colour_does_not_separate_classes():
    """Nearest class mean on per-image mean RGB stays near chance (10%)."""
    train, y_train = generate(600, seed=0, split="train")
    test, y_test = generate(400, seed=0, split="test")
    f_train = train.reshape(len(train), -1, 3).mean(1)
    f_test = test.reshape(len(test), -1, 3).mean(1)
    means = np.stack([f_train[y_train == c].mean(0) for c in range(NUM_CLASSES)])
    pred = np.argmin(((f_test[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == y_test).mean()
    assert accuracy < 0.30, accuracy
    # sanity of the probe itself: on a leaky feature (the label) it would be perfect
    leaky = np.stack([y_train] * 3, 1).astype(float)
    leaky_means = np.stack([leaky[y_train == c].mean(0) for c in range(NUM_CLASSES)])
    assert (np.argmin(((leaky[:, None] - leaky_means[None]) ** 2).sum(-1), 1) == y_train).all()


def test_datamodule_splits_and_preprocess():
    dm = SyntheticDataModule(n_train=30, n_val=20, n_test=10, seed=4, batch_size=8)
    dm.setup()
    assert (len(dm.train_set), len(dm.holdout_set), len(dm.test_set)) == (30, 20, 10)
    x, y = dm.train_set[0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == dm.input_shape == (3, 32, 32)
    img, lab = generate(30, seed=4, split="train")
    assert torch.equal(dm.train_set.tensors[0], torch.from_numpy(img).permute(0, 3, 1, 2))
    assert torch.equal(dm.train_set.tensors[1], torch.from_numpy(lab))
    z = dm.preprocess(dm.train_set.tensors[0])
    assert z.dtype == torch.float32
    assert torch.allclose(z, (dm.train_set.tensors[0].float() / 255 - 0.5) / 0.25)
    again = SyntheticDataModule(n_train=30, n_val=20, n_test=10, seed=4)
    again.setup()
    assert torch.equal(again.test_set.tensors[0], dm.test_set.tensors[0])


@pytest.mark.parametrize("kwargs, key", [(dict(n_train=0), "data.module.n_train"),
                                         (dict(n_test=-1), "data.module.n_test"),
                                         (dict(image_size=8), "data.module.image_size")])
def test_bad_sizes(kwargs, key):
    with pytest.raises(ConfigError) as info:
        SyntheticDataModule(**kwargs)
    assert info.value.key == key
