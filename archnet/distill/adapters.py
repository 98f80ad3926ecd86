"""Training-only adapters: Teacher Attention + Residual Feature Adaptation (reference 2.1).

At a supervised feature tap with student tensor ``s`` (C channels) and teacher tensor ``t``:

* **Teacher attention** (an SE gate driven by the teacher, Hu et al. 2018):
  ``a = sigmoid(W2 relu(W1 GAP(t) + b1) + b2)`` in ``R^C``; ``W1: C -> h``, ``W2: h -> C``
  with ``h = max(1, planes // squeeze)`` (``squeeze`` 24 in the authors' scripts; ``planes``
  is the block's width ``p``, so ``h`` is 2, 5, 10, 21 for ``p`` = 64 ... 512 even where C = 4p).
* **Residual feature adaptation**: ``F = U(a * s) + s`` where ``U`` is a float
  ``1x1 (C -> m) -> 3x3 (m -> m) -> 1x1 (m -> C)`` conv chain with no bias, BN or
  nonlinearity; ``m = C``, except where ``C`` exceeds the block's ``planes`` (ResNet-50's
  ``conv3`` and ``out`` taps, ``C = 4p``): ``m = p``. The ``+ s`` adds the *ungated* tensor.

``F`` (not ``s``) enters the distillation loss against ``t``. The stem and the logits get no
adapter. Adapters live in :class:`~archnet.distill.stage_module.DistillNet` (stage
checkpoints), never in the student (``student.pt``, export).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from archnet.models.taps import LOGITS, TappedChain, tap_shapes


class TeacherAttention(nn.Module):
    """``a = sigmoid(W2 relu(W1 GAP(t) + b1) + b2)``, shaped ``B x C x 1 x 1``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, t: Tensor) -> Tensor:
        a = self.fc2(self.fc1(t.mean((2, 3))).relu()).sigmoid()
        return a[:, :, None, None]


class ResidualFeatureAdaptation(nn.Module):
    """``U(x) = conv1x1(conv3x3(conv1x1(x)))`` (``C -> m -> m -> C``), linear and bias-free.

    Convs start kaiming-normal (fan_out), as the authors' code; ``zero_init`` zeroes the last
    1x1 so ``U = 0`` at the start (the adapter then begins as the identity ``F = s``).
    """

    def __init__(self, channels: int, hidden: int, zero_init: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False),
                                  nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
                                  nn.Conv2d(hidden, channels, 1, bias=False))
        for conv in self.body:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if zero_init:
            nn.init.zeros_(self.body[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class TapAdapter(nn.Module):
    """``F(s, t) = U(a(t) * s) + s``; without attention ``a = 1``, without residual no ``+ s``."""

    def __init__(self, channels: int, hidden: int, attention_hidden: int | None,
                 residual: bool = True, zero_init: bool = False) -> None:
        super().__init__()
        self.attention = None if attention_hidden is None else TeacherAttention(channels, attention_hidden)
        self.rfa = ResidualFeatureAdaptation(channels, hidden, zero_init)
        self.residual = residual

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        gated = s if self.attention is None else s * self.attention(t)
        out = self.rfa(gated)
        return out + s if self.residual else out


def block_of(tap: str) -> str:
    """``layer1.0.conv2`` -> ``layer1.0`` (the block a tap belongs to)."""
    return tap.rsplit(".", 1)[0]


def block_planes(shapes: dict[str, tuple[int, ...]], taps: Sequence[str]) -> dict[str, int]:
    """``planes`` of each block: the fewest channels among its feature taps (``p`` for
    basic blocks and bottlenecks alike)."""
    planes: dict[str, int] = {}
    for tap in taps:
        b = block_of(tap)
        planes[b] = min(planes.get(b, shapes[tap][0]), shapes[tap][0])
    return planes


def feature_taps(teacher: TappedChain, student: TappedChain, taps: Sequence[str] | None = None) -> list[str]:
    """Taps that get an adapter: the given ``taps``, or every tap both models expose except
    ``stem`` and ``logits``."""
    common = [t for t in teacher.tap_names if t in set(student.tap_names)]
    if taps is None:
        return [t for t in common if t not in ("stem", LOGITS)]
    unknown = [t for t in taps if t not in common]
    if unknown:
        from archnet.errors import ConfigError

        raise ConfigError("distill.adapters.taps", unknown, "taps of both teacher and student")
    return list(taps)


def rfa_adapters(teacher: TappedChain, student: TappedChain, input_shape: tuple[int, int, int],
                 squeeze: int = 24, attention: bool = True, residual: bool = True,
                 taps: Sequence[str] | None = None, width: float = 1.0,
                 zero_init: bool = False) -> dict[str, nn.Module]:
    """``{tap: TapAdapter}`` for ``distill.adapters`` (``_target_`` of this function).

    Args:
        teacher: the frozen teacher (its tap shapes give ``C`` and the block ``planes``).
        student: the student; each adapted tap must have the teacher's shape.
        input_shape: ``(C, H, W)`` of one image.
        squeeze: SE reduction ``r``: attention hidden width ``max(1, planes // r)``.
        attention: gate with teacher attention (authors: on for CNNs).
        residual: add ``+ s`` (the authors' ``fa_res``, on).
        taps: taps to adapt (default: all feature taps both models share).
        width: RFA hidden width ``m = max(1, round(width * min(C, planes)))`` (authors: 1).
        zero_init: start ``U`` at zero so every adapter begins as ``F = s`` (not the authors').
    """
    chosen = feature_taps(teacher, student, taps)
    t_shapes, s_shapes = tap_shapes(teacher, input_shape), tap_shapes(student, input_shape)
    mismatched = [f"{t}: student {s_shapes[t]} vs teacher {t_shapes[t]}"
                  for t in chosen if s_shapes[t] != t_shapes[t] or len(t_shapes[t]) != 3]
    if mismatched:
        raise ValueError("adapters need equal C x H x W taps: " + "; ".join(mismatched))
    planes = block_planes(t_shapes, chosen)
    out: dict[str, nn.Module] = {}
    for tap in chosen:
        c, p = t_shapes[tap][0], planes[block_of(tap)]
        hidden = max(1, round(width * min(c, p)))
        out[tap] = TapAdapter(c, hidden, max(1, p // squeeze) if attention else None, residual, zero_init)
    return out
