"""The Arch-Net student: a tapped chain of Arch-Net blocks built by a converter.

Block ``b`` of the student mirrors teacher block ``b`` and exposes the same tap names, so
distillation pairs them by name. A block computes its main-path units in order, an
optional shortcut, and an optional :class:`ConcatMerge`; ``tap_points`` picks which of
those internal tensors are the block's taps (the last is always the block output).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from archnet.models.taps import TapBlock, TappedChain
from archnet.ops.layers import QLinear


class ArchBlock(TapBlock):
    """Main units ``u_1..u_n`` -> (optional) ``merge(h_n, shortcut(x))``.

    Internal tensors are ``[h_1, ..., h_n, merged]`` (no ``merged`` without a merge);
    ``tap_points[i]`` is the internal index of tap ``tap_suffixes[i]``. ``preadd_offset``
    (a ``[C, 1, 1]`` buffer, ``None`` unless set by :func:`archnet.convert.calibrate.shift_preadd`) is
    subtracted from ``h_n`` where ``h_n`` is *tapped*: ``h_n`` carries a signed pre-add tensor
    shifted up by it so the unsigned activation keeps its negative part; the merge, which
    sees ``h_n`` itself, removes the shift. ``inner_kept`` (conversion only, not saved): for
    main units built from a teacher conv with pruned outputs, the teacher channels they hold.
    """

    def __init__(self, main: Sequence[nn.Module], tap_suffixes: Sequence[str],
                 tap_points: Sequence[int], shortcut: nn.Module | None = None,
                 merge: nn.Module | None = None, inner_kept: Sequence[Tensor] | None = None) -> None:
        super().__init__()
        self.inner_kept = list(inner_kept or [])
        self.main = nn.ModuleList(main)
        self.shortcut = shortcut
        self.merge = merge
        self.tap_suffixes = tuple(tap_suffixes)
        self.tap_points = tuple(tap_points)
        n_internal = len(self.main) + (merge is not None)
        if len(self.tap_points) != len(self.tap_suffixes) or self.tap_points[-1] != n_internal - 1:
            raise ValueError("tap_points must map every suffix and end at the block output")
        self.register_buffer("preadd_offset", None)

    def _internal(self, x: Tensor, need: int) -> list[Tensor]:
        """The first ``need`` internal tensors ``[h_1, ..., h_n, merged]``."""
        internal: list[Tensor] = []
        h = x
        for unit in self.main:
            if len(internal) == need:
                break
            h = unit(h)
            internal.append(h)
        if self.merge is not None and len(internal) < need:
            short = x if self.shortcut is None else self.shortcut(x)
            internal.append(self.merge(h, short))
        return internal

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        internal = self._internal(x, self.tap_points[n - 1] + 1)
        taps = [internal[i] for i in self.tap_points[:n]]
        if self.preadd_offset is not None:  # shape [C, 1, 1]
            last = len(self.main) - 1
            taps = [t - self.preadd_offset if i == last else t for t, i in zip(taps, self.tap_points[:n])]
        return taps

    def forward(self, x: Tensor) -> Tensor:
        """The block output (no tap read-outs: what the deployed student computes)."""
        return self._internal(x, self.tap_points[-1] + 1)[self.tap_points[-1]]


class Head(nn.Module):
    """Classifier: ``gap`` (global average pool -> FC, as the authors' code) or ``flatten``
    (flatten -> FC over all positions, no pooling op; initialised from a GAP+FC teacher by
    tiling ``W / (H*W)``, which computes the same function). Logits optionally clipped."""

    def __init__(self, kind: str, channels: int, spatial: tuple[int, int], num_classes: int,
                 weight_quantizer: nn.Module | None = None, logit_clip: float | None = None) -> None:
        super().__init__()
        if kind not in ("gap", "flatten"):
            raise ValueError(f"student.head={kind!r}: one of gap, flatten")
        self.kind, self.spatial, self.logit_clip = kind, tuple(spatial), logit_clip
        in_features = channels if kind == "gap" else channels * spatial[0] * spatial[1]
        self.fc = QLinear(in_features, num_classes, weight_quantizer=weight_quantizer)

    def forward(self, h: Tensor) -> Tensor:
        h = h.mean((2, 3)) if self.kind == "gap" else torch.flatten(h, 1)
        z = self.fc(h)
        return z if self.logit_clip is None else z.clamp(-self.logit_clip, self.logit_clip)

    @torch.no_grad()
    def load_from_gap_fc(self, fc: nn.Linear) -> None:
        """Copy a teacher's GAP+FC classifier so the student head computes the same logits."""
        if self.kind == "gap":
            self.fc.weight.copy_(fc.weight)
        else:
            hw = self.spatial[0] * self.spatial[1]
            w = fc.weight[:, :, None].expand(-1, -1, hw) / hw
            self.fc.weight.copy_(w.reshape(fc.out_features, -1))
        self.fc.bias.copy_(fc.bias)


class ArchNetStudent(TappedChain):
    """``stem -> blocks -> head`` made only of Arch-Net units; tap names follow the teacher."""

    def __init__(self, stem: nn.Module, blocks: Sequence[tuple[str, ArchBlock]], head: Head) -> None:
        super().__init__()
        self.stem = stem
        self.body = nn.ModuleList(b for _, b in blocks)
        self._block_names = [n for n, _ in blocks]
        self.head = head

    @property
    def block_names(self) -> list[str]:
        return self._block_names

    def blocks(self) -> Iterator[tuple[str, ArchBlock]]:  # type: ignore[override]
        yield from zip(self._block_names, self.body)  # type: ignore[misc]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def forward_head(self, h: Tensor) -> Tensor:
        return self.head(h)
