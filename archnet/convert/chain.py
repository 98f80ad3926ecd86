"""Any chain-of-blocks CNN -> tapped teacher + Arch-Net student built from block signatures.

Given an arbitrary ``nn.Module`` and the ordered dotted names of its stem and blocks (each
block runs once per forward, in that order, and the logits are the model's output):

1. :class:`ChainTeacher` wraps it into the tap contract with forward hooks: taps ``stem``,
   ``<block>.out`` per block and ``logits``; each tap is cloned when its module returns
   (later in-place ops cannot alias it) and the forward stops after the requested tap.
2. A shape probe measures each block's **signature** relative to the previous tap: input
   channels and size = the previous tap's (the stem's input is the image), output channels
   and size = the block's; stride ``s = in / out`` (a power of 2, the same on both axes).
   Ops the teacher runs between blocks (pooling, ...) are thereby folded into the next block.
3. Each signature becomes an :class:`ArchBlock` from its topology entry
   (:class:`BlockTopology`):

   * ``n_units`` 3x3 units ``cin -> w -> ... -> w -> cout`` with ``w = round(width * cout)``;
   * ``downsample`` for each factor 2 of the stride: ``stride`` makes the next unit stride 2,
     ``pool`` puts a 2x2/2 max-pool after it (extra factors beyond ``n_units``: more pools);
   * ``shortcut``: a :class:`ConcatMerge` of the main path and the shortcut, which is the
     identity (same channels, stride 1), 2x2 max-pools (same channels, strided) or a 3x3 unit
     (``cin -> cout``, stride 2 for the first factor, pools for the rest);
   * dense units seeing more than ``max_in_channels`` are split into groups (:func:`conv_unit`).

   The stem uses ``topology["stem"]`` (default one unit, ``pool``, no shortcut); the head is
   :class:`Head`, initialised from ``head_name`` (the teacher's final ``nn.Linear``) when it
   is a GAP+FC (``in_features == channels``) or, for a ``flatten`` head, a flatten+FC.

Student weights are random (the teacher's convs need not map onto 3x3 units). The student's
tap shapes are checked against the teacher's; a mismatch is a ConfigError.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

from omegaconf import OmegaConf
from torch import Tensor, nn

from archnet.convert.resnet import conv_unit
from archnet.errors import ConfigError
from archnet.models.student import ArchBlock, ArchNetStudent, Head
from archnet.models.taps import LOGITS, TappedChain, tap_shapes
from archnet.ops.quant import QuantConfig, head_weight_config, make_weight_quantizer
from archnet.ops.units import ConcatMerge, ConvUnit

DOWNSAMPLE = ("stride", "pool")


class _Stop(Exception):
    """Raised from a hook to end the teacher's forward after the last requested tap."""


class ChainTeacher(TappedChain):
    """Tap adaptor around ``model``: taps ``stem``, ``<block>.out``..., ``logits`` via hooks."""

    def __init__(self, model: nn.Module, block_names: Sequence[str], stem_name: str) -> None:
        super().__init__()
        self.model = model
        self.stem_name, self._block_names = stem_name, list(block_names)
        for name in [stem_name, *block_names]:
            model.get_submodule(name)  # fail early on a wrong name

    @property
    def block_names(self) -> list[str]:
        return self._block_names

    def blocks(self) -> Iterator[tuple[str, nn.Module]]:  # type: ignore[override]
        """The wrapped model's block modules (plain modules: one ``out`` tap each)."""
        for name in self._block_names:
            yield name, self.model.get_submodule(name)

    @property
    def tap_names(self) -> list[str]:
        return ["stem", *(f"{b}.out" for b in self._block_names), LOGITS]

    def forward_taps(self, x: Tensor, upto: int | None = None) -> dict[str, Tensor]:
        names = self.tap_names
        last = len(names) - 1 if upto is None else upto
        if not 0 <= last < len(names):
            raise IndexError(f"tap index {last} outside 0..{len(names) - 1}")
        captured: dict[str, Tensor] = {}

        def hook_for(tap: str):
            def hook(module: nn.Module, args: Any, out: Any) -> None:
                if tap in captured:
                    raise RuntimeError(f"{tap}: module ran twice in one forward (shared module?)")
                if not isinstance(out, Tensor):
                    raise TypeError(f"{tap}: the module returned {type(out).__name__}, not a tensor")
                captured[tap] = out.clone()
                if len(captured) == last + 1 and last < len(names) - 1:
                    raise _Stop
            return hook

        modules = [self.stem_name, *self._block_names][: last + 1]
        handles = [self.model.get_submodule(m).register_forward_hook(hook_for(t))
                   for m, t in zip(modules, names)]
        try:
            logits = self.model(x)
            if last == len(names) - 1:
                captured[LOGITS] = logits
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in names[: last + 1] if n not in captured]
        if missing:
            raise RuntimeError(f"taps {missing} were never produced by the forward")
        return {n: captured[n] for n in names[: last + 1]}

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@dataclass(frozen=True)
class BlockSignature:
    """What a student block must do: ``in_channels x in_size -> out_channels x out_size``."""

    name: str
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: int


@dataclass(frozen=True)
class BlockTopology:
    """One student block: ``n_units`` 3x3 units of width ``width * out``, optional merge."""

    n_units: int = 2
    width: float = 1.0
    shortcut: bool = True
    downsample: str = "stride"


STEM_TOPOLOGY = BlockTopology(n_units=1, shortcut=False, downsample="pool")


class ChainConversion(NamedTuple):
    teacher: ChainTeacher
    student: ArchNetStudent
    signatures: list[BlockSignature]


def _stride(name: str, cin: Sequence[int], cout: Sequence[int]) -> int:
    """``2**k`` with ``out = floor or ceil(in / 2**k)`` on both axes, else ConfigError."""
    ks = {max(0, round(math.log2(a / b))) if b > 0 else -1 for a, b in zip(cin, cout)}
    k = ks.pop()
    if ks or k < 0 or any(b not in (a // 2**k, -(-a // 2**k)) for a, b in zip(cin, cout)):
        raise ConfigError("student.topology", name, f"block maps {tuple(cin)} to {tuple(cout)}: only "
                          "the same power-of-2 downsampling on both axes converts")
    return 2**k


def probe_signatures(teacher: ChainTeacher, input_shape: tuple[int, int, int]) -> list[BlockSignature]:
    """Signatures of the stem (first) and every block, measured with a zero-input probe."""
    shapes = tap_shapes(teacher, input_shape)
    sigs, prev = [], tuple(input_shape)
    for tap in teacher.tap_names[:-1]:
        shape = shapes[tap]
        if len(shape) != 3:
            raise ConfigError("student.topology", tap, f"output shape {shape} is not C x H x W")
        name = tap.removesuffix(".out")
        stride = _stride(name, prev[1:], shape[1:])
        sigs.append(BlockSignature(name, prev[0], shape[0], prev[1:], shape[1:], stride))
        prev = shape
    return sigs


def parse_topology(topology: Mapping | Sequence | None, block_names: Sequence[str]
                   ) -> tuple[BlockTopology, list[BlockTopology]]:
    """``topology`` -> (stem, per-block) entries. A dict gives defaults plus optional ``stem``
    and ``blocks`` (a list in block order, or ``{block name: overrides}``); a list is the
    per-block list itself. Per-block entries override the defaults key by key."""
    if OmegaConf.is_config(topology):  # a DictConfig / ListConfig from Hydra
        topology = OmegaConf.to_container(topology, resolve=True)  # type: ignore[assignment]
    if isinstance(topology, str) or not isinstance(topology, (Mapping, Sequence, type(None))):
        raise ConfigError("student.topology", topology, "a mapping of defaults or a per-block list")
    if topology is None or isinstance(topology, Sequence):
        topology = {"blocks": list(topology or [])}
    top = dict(topology)
    stem = _topo(replace(STEM_TOPOLOGY), top.pop("stem", None), "stem")
    per = top.pop("blocks", None) or []
    default = _topo(BlockTopology(), top, "default")
    if isinstance(per, Mapping):
        unknown = sorted(set(per) - set(block_names))
        if unknown:
            raise ConfigError("student.topology.blocks", unknown, "one of " + ", ".join(block_names))
        per = [per.get(n) for n in block_names]
    if per and len(per) != len(block_names):
        raise ConfigError("student.topology.blocks", f"{len(per)} entries",
                          f"one per block ({len(block_names)})")
    return stem, [_topo(default, per[i] if per else None, n) for i, n in enumerate(block_names)]


def _topo(base: BlockTopology, over: Mapping | None, where: str) -> BlockTopology:
    over = dict(over or {})
    known = {f.name for f in fields(BlockTopology)}
    for k in over:
        if k not in known:
            raise ConfigError(f"student.topology.{where}.{k}", over[k], "one of " + ", ".join(sorted(known)))
    t = replace(base, **over)
    if t.downsample not in DOWNSAMPLE or t.n_units < 1 or t.width <= 0:
        raise ConfigError(f"student.topology.{where}", over, "n_units >= 1, width > 0, "
                          "downsample one of stride, pool")
    return t


def _pool(sig: BlockSignature) -> nn.MaxPool2d:
    ceil = any(o > i // sig.stride for i, o in zip(sig.in_size, sig.out_size))
    return nn.MaxPool2d(2, 2, ceil_mode=ceil)


def build_units(sig: BlockSignature, topo: BlockTopology, quant: QuantConfig,
                max_in_channels: int = 512, first: bool = False) -> list[nn.Module]:
    """The main path: ``n_units`` 3x3 units (and max-pools) from ``sig.in`` to ``sig.out``.

    ``first``: the stem's first unit, weight-quantized only with ``quant.quantize_first_conv``.
    """
    k = int(math.log2(sig.stride))
    width = max(1, round(topo.width * sig.out_channels))
    widths = [width] * (topo.n_units - 1) + [sig.out_channels]
    main: list[nn.Module] = []
    c = sig.in_channels
    for i, cout in enumerate(widths):
        s = 2 if topo.downsample == "stride" and i < k else 1
        if first and i == 0:
            main.append(ConvUnit(c, cout, s, quant, quantize_weight=quant.quantize_first_conv))
        else:
            main.append(conv_unit(c, cout, s, quant, max_in_channels))
        if topo.downsample == "pool" and i < k:
            main.append(_pool(sig))
        c = cout
    return main + [_pool(sig) for _ in range(k - topo.n_units)]


def build_block(sig: BlockSignature, topo: BlockTopology, quant: QuantConfig,
                max_in_channels: int = 512) -> ArchBlock:
    """The student block for one signature: main units, optional shortcut + concat merge."""
    main = build_units(sig, topo, quant, max_in_channels)
    if not topo.shortcut:
        return ArchBlock(main, ("out",), [len(main) - 1])
    k = int(math.log2(sig.stride))
    cin, cout = sig.in_channels, sig.out_channels
    if cin == cout:
        shortcut: nn.Module | None = nn.Sequential(*[_pool(sig) for _ in range(k)]) if k else None
    else:
        shortcut = nn.Sequential(conv_unit(cin, cout, 2 if k else 1, quant, max_in_channels),
                                 *[_pool(sig) for _ in range(k - 1)])
    try:
        merge = ConcatMerge(cout, cout, cout, quant, max_in_channels)
    except ValueError as e:
        raise ConfigError(f"student.topology.blocks.{sig.name}.shortcut", True, str(e)) from None
    return ArchBlock(main, ("out",), [len(main)], shortcut=shortcut, merge=merge)


def convert_chain(teacher: nn.Module, block_names: Sequence[str], stem_name: str,
                  head_name: str | None = None, topology: Mapping | Sequence | None = None,
                  input_shape: tuple[int, int, int] = (3, 224, 224),
                  quant: QuantConfig | None = None, head: str = "flatten",
                  max_in_channels: int = 512) -> ChainConversion:
    """Wrap ``teacher`` into a :class:`ChainTeacher` and build its student (module docstring)."""
    quant = quant or QuantConfig()
    tapped = ChainTeacher(teacher, block_names, stem_name)
    sigs = probe_signatures(tapped, input_shape)
    stem_topo, topos = parse_topology(topology, block_names)
    stem = nn.Sequential(*build_units(sigs[0], stem_topo, quant, max_in_channels, first=True))
    blocks = [(s.name, build_block(s, t, quant, max_in_channels)) for s, t in zip(sigs[1:], topos)]
    shapes = tap_shapes(tapped, input_shape)
    last = sigs[-1]
    hq = make_weight_quantizer(head_weight_config(quant), role="head")
    student_head = Head(head, last.out_channels, last.out_size, shapes[LOGITS][0], hq, quant.logit_clip)
    if head_name is not None:
        _init_head(student_head, teacher.get_submodule(head_name), last)
    student = ArchNetStudent(stem, blocks, student_head)
    got = tap_shapes(student, input_shape)
    bad = [f"{k}: student {got[k]} vs teacher {v}" for k, v in shapes.items() if got.get(k) != v]
    if bad:
        raise ConfigError("student.topology", "downsample", "student taps do not match the "
                          "teacher's (try downsample=pool or an even input size): " + "; ".join(bad))
    return ChainConversion(tapped, student, sigs)


def _init_head(dst: Head, fc: nn.Module, last: BlockSignature) -> None:
    if isinstance(fc, nn.Linear) and fc.out_features == dst.fc.out_features:
        if fc.in_features == last.out_channels:
            dst.load_from_gap_fc(fc)
            return
        if dst.kind == "flatten" and fc.in_features == dst.fc.in_features:
            dst.fc.weight.data.copy_(fc.weight)
            dst.fc.bias.data.copy_(fc.bias)
            return
    warnings.warn(f"head {type(fc).__name__} does not fit the student head; left random", stacklevel=3)
