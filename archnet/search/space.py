"""The search space: per-block choices over Arch-Net student blocks (reference 7.2).

Student block ``b`` mirrors teacher block ``b``'s signature ``C_in x H x W -> C_b x H/s x W/s``.
A *choice* is ``(n_units, width, shortcut)``:

* ``n_units`` 3x3 conv-BN-ReLU(-quant) units in the main branch, all of internal width
  ``m = max(divisor, divisor * round(width * C_b / divisor))``; the first carries the
  stride (2, plus ``log2(s) - 1`` 2x2 max-pools after it for larger strides);
* ``shortcut``: the block input (identity, or ``log2(s)`` 2x2 max-pools), ``C_in`` channels;
* always a **merge** 3x3 unit ``concat[main m | shortcut C_in] -> C_b`` (``m -> C_b``
  without shortcut), so the block output matches the teacher's and its MSE target.

Choices giving the same ``(n_units, m, shortcut)`` are kept once; choices whose merge or
first unit would see more than ``max_in_channels`` input channels are dropped (the
``archnet`` profile's limit, reference 1.2). A *path* is one choice index per block.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from archnet.errors import ConfigError

Path = tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """What a block must do: ``cin x in_size -> cout x out_size`` (``stride`` a power of 2)."""

    name: str
    cin: int
    cout: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: int
    tap_suffixes: tuple[str, ...] = ("out",)

    @property
    def log_stride(self) -> int:
        return int(math.log2(self.stride))

    @property
    def ceil_pool(self) -> bool:
        """Max-pools round up when the teacher's output is ``ceil(in / stride)``."""
        return any(o > i // self.stride for i, o in zip(self.in_size, self.out_size))


@dataclass(frozen=True)
class Choice:
    """One block choice; ``width`` is the configured option, ``m`` the channels it gives."""

    n_units: int
    width: float
    m: int
    shortcut: bool

    @property
    def width_key(self) -> str:
        """Switchable BN / quantizer key of the main units (one per distinct width)."""
        return f"c{self.m}"

    @property
    def key(self) -> str:
        """Key of the merge unit's BN / quantizers (one per choice)."""
        return f"n{self.n_units}_c{self.m}_s{int(self.shortcut)}"

    def topology(self) -> dict:
        return {"n_units": self.n_units, "width": self.width, "shortcut": self.shortcut}


def round_width(width: float, channels: int, divisor: int) -> int:
    """``max(divisor, divisor * round(width * channels / divisor))``."""
    return max(divisor, divisor * int(round(width * channels / divisor)))


@dataclass
class BlockSpace:
    sig: Signature
    choices: list[Choice]
    dropped: list[tuple[int, float, bool]]

    @property
    def max_m(self) -> int:
        return max(c.m for c in self.choices)

    @property
    def max_units(self) -> int:
        return max(c.n_units for c in self.choices)

    @property
    def widths(self) -> list[int]:
        return sorted({c.m for c in self.choices})


class SearchSpace:
    """Per-block choice lists built from signatures and the ``search.space`` options."""

    def __init__(self, blocks: Sequence[BlockSpace], divisor: int = 8) -> None:
        self.blocks, self.divisor = list(blocks), divisor

    @classmethod
    def build(cls, sigs: Sequence[Signature], n_units: Sequence[int] = (1, 2, 3),
              widths: Sequence[float] = (0.5, 0.75, 1.0), shortcut: Sequence[bool] = (True, False),
              divisor: int = 8, max_in_channels: int = 512) -> SearchSpace:
        """The product ``n_units x widths x shortcut`` for every block (deduplicated, filtered)."""
        for key, vals in (("n_units", n_units), ("widths", widths), ("shortcut", shortcut)):
            if not vals:
                raise ConfigError(f"search.space.{key}", list(vals), "a non-empty list")
        if any(int(n) != n or n < 1 for n in n_units):
            raise ConfigError("search.space.n_units", list(n_units), "integers >= 1")
        if any(not w > 0 for w in widths):
            raise ConfigError("search.space.widths", list(widths), "numbers > 0")
        options = list(itertools.product(n_units, widths, shortcut))
        return cls.from_options(sigs, [options] * len(sigs), divisor, max_in_channels)

    @classmethod
    def from_options(cls, sigs: Sequence[Signature], per_block: Sequence[Sequence[tuple[int, float, bool]]],
                     divisor: int = 8, max_in_channels: int = 512) -> SearchSpace:
        """Blocks from explicit ``(n_units, width, shortcut)`` option lists, one list per block."""
        if not isinstance(divisor, int) or divisor < 1:
            raise ConfigError("search.space.divisor", divisor, "an integer >= 1")
        blocks = []
        for sig, options in zip(sigs, per_block, strict=True):
            kept: dict[tuple[int, int, bool], Choice] = {}
            dropped = []
            for n, w, s in options:
                m = round_width(w, sig.cout, divisor)
                if max(m + (sig.cin if s else 0), sig.cin, m) > max_in_channels:
                    dropped.append((int(n), float(w), bool(s)))
                    continue
                kept.setdefault((int(n), m, bool(s)), Choice(int(n), float(w), m, bool(s)))
            if not kept:
                raise ConfigError("search.space", sig.name, f"no choice keeps every unit under "
                                  f"max_in_channels={max_in_channels} (C_in={sig.cin}, dropped {dropped})")
            blocks.append(BlockSpace(sig, list(kept.values()), dropped))
        return cls(blocks, divisor)

    @property
    def names(self) -> list[str]:
        return [b.sig.name for b in self.blocks]

    @property
    def sizes(self) -> list[int]:
        return [len(b.choices) for b in self.blocks]

    @property
    def n_paths(self) -> int:
        return math.prod(self.sizes)

    def choices(self, path: Path) -> list[Choice]:
        self.check(path)
        return [b.choices[i] for b, i in zip(self.blocks, path)]

    def check(self, path: Sequence[int]) -> None:
        if len(path) != len(self.blocks) or any(not 0 <= i < n for i, n in zip(path, self.sizes)):
            raise ValueError(f"path {tuple(path)} is not in a space of sizes {self.sizes}")

    def largest(self) -> Path:
        """Most units, widest, shortcut on where available (the "full" student)."""
        return tuple(max(range(len(b.choices)), key=lambda i, b=b: (b.choices[i].n_units, b.choices[i].m,
                                                                  b.choices[i].shortcut))
                     for b in self.blocks)

    def to_topology(self, path: Path) -> dict:
        """``{"blocks": {name: {n_units, width, shortcut}}}`` (chain ``parse_topology`` syntax)."""
        return {"blocks": {b.sig.name: c.topology() for b, c in zip(self.blocks, self.choices(path))}}

    def enumerate(self) -> list[Path]:
        return list(itertools.product(*(range(n) for n in self.sizes)))


def _stride(name: str, cin: Sequence[int], cout: Sequence[int]) -> int:
    """``2**k`` with ``out = floor or ceil(in / 2**k)`` on both axes, else ConfigError."""
    for k in range(0, 8):
        if all(b in (a // 2**k, -(-a // 2**k)) for a, b in zip(cin, cout)):
            return 2**k
    raise ConfigError("search.space", name, f"block maps {tuple(cin)} to {tuple(cout)}: only the same "
                      "power-of-2 downsampling on both axes is searchable")


def teacher_signatures(teacher, input_shape: tuple[int, int, int]) -> tuple[Signature, list[Signature]]:
    """Stem and block signatures of a tapped teacher, from the shapes of its ``stem`` and
    ``<block>.out`` taps (a zero-input probe); each block keeps the teacher's tap suffixes."""
    from archnet.models.taps import tap_shapes

    shapes = tap_shapes(teacher, input_shape)
    suffixes = {name: tuple(getattr(block, "tap_suffixes", ("out",))) for name, block in teacher.blocks()}
    sigs, prev = [], tuple(input_shape)
    for name in ["stem", *teacher.block_names]:
        shape = shapes["stem" if name == "stem" else f"{name}.out"]
        if len(shape) != 3:
            raise ConfigError("search.space", name, f"output shape {shape} is not C x H x W")
        sfx = suffixes.get(name, ("out",))
        if sfx[-1] != "out":
            raise ConfigError("search.space", name, f"tap suffixes {sfx} do not end with 'out'")
        stride = _stride(name, prev[1:], shape[1:])
        sigs.append(Signature(name, prev[0], shape[0], tuple(prev[1:]), tuple(shape[1:]), stride, sfx))
        prev = shape
    return sigs[0], sigs[1:]
