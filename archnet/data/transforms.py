"""Image transforms as torch ops on ``uint8`` (or float) tensors.

Images are ``C x H x W`` or batched ``N x C x H x W``; decoded arrays come as ``H x W x C``
and go through :func:`from_hwc` first. Geometric transforms keep the dtype, so data sets can
yield ``uint8`` (archnet's data contract; :func:`to_float` and :func:`normalize`, or the data
module's ``preprocess``, run on the device). Random transforms draw from the
``torch.Generator`` passed at call time: the same generator state gives the same output, and
a batch gets one independent draw per image.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def from_hwc(x: np.ndarray | Tensor) -> Tensor:
    """``H x W x C`` (or ``N x H x W x C``) array -> contiguous ``C x H x W`` tensor, same dtype."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t.movedim(-1, -3).contiguous()


def to_float(x: Tensor) -> Tensor:
    """``uint8`` in [0, 255] -> ``float32`` in [0, 1]: ``y = x / 255``."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normalize(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``y_c = (x_c - mean_c) / std_c`` on a float image in [0, 1] (uint8 is converted first)."""
    x = to_float(x)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def resize_shorter(x: Tensor, size: int) -> Tensor:
    """Scale so the shorter side is ``size`` (aspect kept; the longer side is
    ``round(long * size / short)``), bilinear with antialiasing; uint8 in, uint8 out."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    nh, nw = (size, max(1, round(w * size / h))) if h <= w else (max(1, round(h * size / w)), size)
    batched = x.dim() == 4
    y = F.interpolate((x if batched else x[None]).float(), size=(nh, nw), mode="bilinear",
                      align_corners=False, antialias=True)
    y = y if batched else y[0]
    return y.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)


def center_crop(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """The central ``size`` window; top-left at ``((H - h) // 2, (W - w) // 2)``."""
    h, w = (size, size) if isinstance(size, int) else size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    if top < 0 or left < 0:
        raise ValueError(f"crop {h}x{w} larger than image {tuple(x.shape[-2:])}")
    return x[..., top:top + h, left:left + w]


def random_crop(x: Tensor, size: int, padding: int = 0, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad each side by ``padding``, then crop ``size x size`` at a uniform random offset
    (one offset per image of a batch)."""
    if padding:
        x = F.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    if x.dim() == 3:
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        return x[:, top:top + size, left:left + size]
    tops = torch.randint(0, h - size + 1, (x.shape[0],), generator=generator)
    lefts = torch.randint(0, w - size + 1, (x.shape[0],), generator=generator)
    return torch.stack([img[:, t:t + size, le:le + size] for img, t, le in zip(x, tops.tolist(), lefts.tolist())])


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror left-right with probability ``p`` (independently per image of a batch)."""
    n = 1 if x.dim() == 3 else x.shape[0]
    flip = torch.rand(n, generator=generator) < p
    if x.dim() == 3:
        return x.flip(-1) if bool(flip) else x
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


class Compose:
    """Chain of ``(name, kwargs)`` steps; call as ``t(x, generator)``.

    Steps: ``resize`` (size), ``center_crop`` (size), ``random_crop`` (size, padding),
    ``hflip`` (p), ``to_float``, ``normalize`` (mean, std).
    """

    OPS: ClassVar[dict[str, Callable[..., Tensor]]] = {
        "resize": resize_shorter, "center_crop": center_crop, "random_crop": random_crop,
        "hflip": random_hflip, "to_float": to_float, "normalize": normalize}
    RANDOM = ("random_crop", "hflip")

    def __init__(self, steps: Sequence[tuple[str, dict]]) -> None:
        for name, _ in steps:
            if name not in self.OPS:
                raise ValueError(f"transform {name!r}: one of {', '.join(self.OPS)}")
        self.steps = [(n, dict(kw)) for n, kw in steps]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for name, kw in self.steps:
            extra = {"generator": generator} if name in self.RANDOM else {}
            x = self.OPS[name](x, **kw, **extra)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(f"{n}{kw or ''}" for n, kw in self.steps) + ")"


def imagenet_train(size: int = 224, resize: int = 256) -> Compose:
    """The authors' distillation augmentation (reference 3.2): Resize(256) -> CenterCrop(224)
    -> random horizontal flip; uint8 out (normalisation happens on the device)."""
    return Compose([("resize", {"size": resize}), ("center_crop", {"size": size}), ("hflip", {})])


def imagenet_eval(size: int = 224, resize: int = 256) -> Compose:
    """Resize(256) -> CenterCrop(224) (reference 6); uint8 out."""
    return Compose([("resize", {"size": resize}), ("center_crop", {"size": size})])


def small_train(size: int, padding: int = 4) -> Compose:
    """CIFAR-style: random crop with zero padding + horizontal flip; uint8 out."""
    return Compose([("random_crop", {"size": size, "padding": padding}), ("hflip", {})])
