"""Image folders: RGB conversion of odd files, skipping and counting broken ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from awkward_images import BAD, GOOD
from PIL import Image

from archnet.data.image_folder import ImageFolder, decode_rgb, scan_folder
from archnet.errors import ConfigError


def test_scan_sorted_classes_and_relative_paths(awkward_folder):
    index = scan_folder(awkward_folder, "train")
    assert index.classes == ["n01", "n02"]
    assert len(index) == len(GOOD) + len(BAD)
    assert index.paths == sorted(index.paths) and index.paths[0].startswith("n01/")
    assert set(index.labels[: len(GOOD) - 1]) == {0}  # rgb.JPEG is in n02
    only = scan_folder(awkward_folder, "train", classes=["n02"])
    assert set(only.labels) == {0} and all(p.startswith("n02/") for p in only.paths)
    assert only.select(["n02/rgb.JPEG"]).labels == [0]
    with pytest.raises(ConfigError, match="lacks class folders"):
        scan_folder(awkward_folder, "train", classes=["n03"])
    with pytest.raises(ConfigError, match="no val/"):
        scan_folder(awkward_folder, "val")


def test_convertible_files_load_as_rgb_uint8(awkward_folder):
    base = awkward_folder / "train"
    for name in GOOD:
        rel = ("n02/" if name == "rgb.JPEG" else "n01/") + name
        img = decode_rgb(base / rel)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
    g16 = decode_rgb(base / "n01/gray16.png")
    assert g16[0, 0].tolist() == [255] * 3 and g16[5, 5].tolist() == [100] * 3
    cmyk = decode_rgb(base / "n01/cmyk.JPEG")
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 50  # C=0, M=Y=255: red
    assert Image.open(base / "n01/gray16.png").mode.startswith("I")  # really 16-bit


def test_decode_resizes_shorter_side_and_centre_crops(awkward_folder):
    img = decode_rgb(awkward_folder / "train/n02/rgb.JPEG", size=32)
    assert img.shape == (32, 32, 3)


def test_broken_files_are_skipped_counted_and_reported(awkward_folder, caplog):
    ds = ImageFolder(awkward_folder, "train", max_bad_fraction=0.5)
    assert len(ds) == len(GOOD)
    assert sorted(p.split("/")[1] for p, _ in ds.report.bad) == sorted(BAD)
    assert ds.report.total == len(GOOD) + len(BAD)
    assert "3 of 9 images" in caplog.text
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape[0] == 3 and y in (0, 1)
    with pytest.raises(ConfigError, match="max_bad_fraction"):
        ImageFolder(awkward_folder, "train", max_bad_fraction=0.1)
