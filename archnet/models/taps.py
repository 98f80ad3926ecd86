"""The tap contract shared by teachers and students (DESIGN.md 3.1).

A tapped model exposes ``tap_names`` (ordered supervision points, last is ``logits``) and
``forward_taps(x, upto)`` returning an ordered ``{name: tensor}`` for taps ``0..upto``; it
stops computing after tap ``upto``. Tensors are captured explicitly: blocks never modify a
tapped tensor in place, so no tap aliases a later one.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

LOGITS = "logits"


class TapBlock(nn.Module):
    """A block with ``tap_suffixes`` inner supervision points; the last suffix is its output."""

    tap_suffixes: tuple[str, ...] = ("out",)

    def forward_taps(self, x: Tensor, n: int) -> list[Tensor]:
        """Return the first ``n`` tapped tensors (all of them: the last one is the output)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_taps(x, len(self.tap_suffixes))[-1]


class TappedChain(nn.Module):
    """``stem -> blocks -> head`` with taps ``stem``, ``<block>.<suffix>``..., ``logits``.

    Subclasses implement ``forward_stem`` and ``forward_head`` (features -> logits) and list
    their blocks' attribute paths, in order, in ``block_names`` (e.g. ``layer1.0``).
    """

    def forward_stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def blocks(self) -> Iterator[tuple[str, TapBlock]]:
        for name in self.block_names:
            yield name, self.get_submodule(name)  # type: ignore[misc]

    @property
    def block_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def tap_names(self) -> list[str]:
        names = ["stem"]
        for block_name, block in self.blocks():
            names += [f"{block_name}.{s}" for s in block.tap_suffixes]
        return names + [LOGITS]

    def tap_index(self, name: str) -> int:
        return self.tap_names.index(name)

    def forward_taps(self, x: Tensor, upto: int | None = None) -> dict[str, Tensor]:
        """Tapped tensors ``0..upto`` (default: all); computation stops after tap ``upto``."""
        names = self.tap_names
        last = len(names) - 1 if upto is None else upto
        if not 0 <= last < len(names):
            raise IndexError(f"tap index {last} outside 0..{len(names) - 1}")
        out: dict[str, Tensor] = {}
        h = self.forward_stem(x)
        out["stem"] = h
        for block_name, block in self.blocks():
            remaining = last + 1 - len(out)
            if remaining <= 0:
                return out
            n = min(remaining, len(block.tap_suffixes))
            taps = block.forward_taps(h, n)
            for suffix, t in zip(block.tap_suffixes, taps):
                out[f"{block_name}.{suffix}"] = t
            h = taps[-1]
        if len(out) <= last:
            out[LOGITS] = self.forward_head(h)
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = self.forward_stem(x)
        for _, block in self.blocks():
            h = block(h)
        return self.forward_head(h)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every submodule gets back its own
    mode. (``model.train(was_training)`` would put a frozen teacher held inside a wrapper
    back into train mode: its BN statistics would then move.)"""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def tap_shapes(model: TappedChain, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shapes of every tap for one input of ``input_shape`` (C, H, W), batch of 2."""
    with eval_mode(model):
        p = next(model.parameters())
        x = torch.zeros(2, *input_shape, device=p.device, dtype=p.dtype)
        return {k: tuple(v.shape[1:]) for k, v in model.forward_taps(x).items()}
