"""A tiny ImageNet-layout folder with the awkward files real data sets contain."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = ("rgb.JPEG", "cmyk.JPEG", "gray.png", "gray16.png", "palette.png", "rgba.png")
BAD = ("truncated.JPEG", "empty.JPEG", "text.JPEG")


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_awkward_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    a, b = root / "train" / "n02", root / "train" / "n01"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    noise = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (a / "rgb.JPEG").write_bytes(_jpeg_bytes(Image.fromarray(noise)))
    (a / "truncated.JPEG").write_bytes(_jpeg_bytes(Image.fromarray(noise))[:1500])
    (a / "empty.JPEG").write_bytes(b"")
    (a / "text.JPEG").write_text("this is not an image\n")
    (b / "cmyk.JPEG").write_bytes(_jpeg_bytes(Image.new("CMYK", (30, 20), (0, 255, 255, 0))))
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), mode="L").save(b / "gray.png")
    g16 = np.full((24, 24), 257 * 100, dtype=np.uint16)
    g16[0, 0] = 65535
    Image.fromarray(g16).save(b / "gray16.png")
    Image.new("P", (16, 16), 3).save(b / "palette.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 0)).save(b / "rgba.png")
    (b / "notes.txt").write_text("ignored: not an image extension")
    return root
