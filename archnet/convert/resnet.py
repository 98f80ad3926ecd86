"""ResNet teacher -> Arch-Net student, the reference's rules (section 1.2):

* stem ``imagenet`` (7x7/2 conv + 3x3/2 max-pool) -> units 3x3 (s1, s1, s2) + 2x2 max-pool
  (random init); stem ``small`` (3x3 conv + 2x2 max-pool) -> one unit (copied) + 2x2 max-pool;
* every conv -> a 3x3 unit with the teacher's weights (1x1 kernels at the centre) and BN;
* the 1x1 projection shortcut -> a 3x3 unit, centre-initialised, BN copied;
* ``relu(F(x) + shortcut)`` -> :class:`ConcatMerge` (sliced above ``max_in_channels``);
* a conv whose input exceeds ``max_in_channels`` (ResNet50: layer3/4 ``conv1``, the layer4
  projection) -> :class:`SplitConvUnit`: the input is cut into ``g`` equal groups of at most
  ``max_in_channels`` channels, group ``i`` feeds its own 3x3 unit to ``cout / g`` channels
  and the outputs are concatenated (reference 1.4; no cross-group mixing). Random init, as
  the authors' code; ``init_split_from_teacher`` copies the block-diagonal part instead;
* ``r50_layer2_bug`` (off by default) reproduces the authors' ResNet50 layer2: the block
  output is the conv3 unit and no merge or shortcut is built (the authors' dead parameters
  are omitted, so nothing is left without a gradient);
* GAP + FC -> :class:`Head` (``flatten`` by default; ``gap`` as the authors' code);
* ``init_preadd_shift=k > 0`` (needs ``init_merge_as_add`` or ``fold_add``): the signed pre-add
  tensors keep ``k`` standard deviations below their mean through the unsigned activations
  (:func:`archnet.convert.calibrate.shift_preadd`);
* ``fold_add`` (archnet's, off by default): no unit for the block's last conv and no separate
  merge conv; the last conv reads ``concat[h_{n-1}, shortcut]`` and starts as
  ``bn(conv(h_{n-1})) + shortcut`` (:func:`archnet.convert.weights.init_folded_merge`), so the
  signed pre-add tensor is never materialised and a basic block costs 1.5x its teacher's
  MACs instead of 2x. The block's taps lose the last conv's (``conv2`` / ``conv3``);
* ``inner_width=f < 1`` (archnet's, 1 by default; a list gives one ``f`` per block, in the
  teacher's block order): each block's inner channels (the outputs of
  every conv but the last) are cut to ``f`` of the teacher's (rounded to a multiple of
  ``inner_divisor``, 4: aligned slices of a folded merge need even widths), the most important kept
  (:mod:`archnet.convert.prune`); the block loses the taps of the pruned convs, whose
  widths no longer match the teacher's;
* ``stem_strides`` (``imagenet`` stem): the strides of the random 3x3 units before the 2x2
  max-pool; ``(1, 1, 2)`` is the reference's (2.40 GMACs at 224 px, the teacher's 7x7 stem
  0.12), ``(2,)`` 0.02 GMACs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from archnet.convert.calibrate import shift_folded_shortcut, shift_preadd
from archnet.convert.prune import prune_inner
from archnet.convert.weights import init_folded_merge, init_merge_as_add, load_bn, load_conv_as_3x3
from archnet.errors import ConfigError
from archnet.models.resnet import BasicBlock, Bottleneck, ResNet
from archnet.models.student import ArchBlock, ArchNetStudent, Head
from archnet.models.taps import tap_shapes
from archnet.ops.quant import QuantConfig, activation_scale, head_weight_config, make_weight_quantizer
from archnet.ops.units import ConcatMerge, ConvUnit


def split_groups(cin: int, cout: int, max_in_channels: int) -> int:
    """Smallest ``g`` with ``cin / g <= max_in_channels`` dividing both ``cin`` and ``cout``."""
    for g in range(-(-cin // max_in_channels), cin + 1):
        if cin % g == 0 and cout % g == 0:
            return g
    raise ValueError(f"cannot split a {cin}->{cout} conv under max_in_channels={max_in_channels}")


class SplitConvUnit(nn.Module):
    """``concat_i unit_i(x[:, i*cin/g:(i+1)*cin/g])``: ``g`` 3x3 units of ``cin/g -> cout/g``."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int,
                 quant: QuantConfig | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = cin, cout, groups
        self.units = nn.ModuleList(ConvUnit(cin // groups, cout // groups, stride, quant)
                                   for _ in range(groups))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([u(p) for u, p in zip(self.units, x.chunk(self.groups, 1))], 1)

    @torch.no_grad()
    def load_block_diagonal(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, fill: float = 0.0) -> None:
        """Group ``i`` gets the teacher's weights from input group ``i`` to output group ``i``."""
        ci, co = self.in_channels // self.groups, self.out_channels // self.groups
        for i, unit in enumerate(self.units):
            part = nn.Conv2d(ci, co, conv.kernel_size, bias=False)
            part.weight.copy_(conv.weight[i * co:(i + 1) * co, i * ci:(i + 1) * ci])
            load_conv_as_3x3(unit.conv, part, fill)
            src = nn.BatchNorm2d(co, eps=bn.eps)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(src, name).copy_(getattr(bn, name)[i * co:(i + 1) * co])
            load_bn(unit.bn, src)


def conv_unit(cin: int, cout: int, stride: int, quant: QuantConfig | None,
              max_in_channels: int = 512, groups: int = 1) -> nn.Module:
    """A :class:`ConvUnit`, or a :class:`SplitConvUnit` when a dense conv sees more than
    ``max_in_channels`` input channels (grouped convs see ``cin / groups``)."""
    if groups == 1 and cin > max_in_channels:
        return SplitConvUnit(cin, cout, stride, split_groups(cin, cout, max_in_channels), quant)
    return ConvUnit(cin, cout, stride, quant, groups=groups)


def _unit_from(conv: nn.Conv2d, bn: nn.BatchNorm2d, quant: QuantConfig, init: bool,
               fill: float, max_in_channels: int = 512, init_split: bool = False) -> nn.Module:
    unit = conv_unit(conv.in_channels, conv.out_channels, conv.stride[0], quant, max_in_channels)
    if isinstance(unit, SplitConvUnit):
        if init and init_split:
            unit.load_block_diagonal(conv, bn, fill)
    elif init:
        load_conv_as_3x3(unit.conv, conv, fill)
        load_bn(unit.bn, bn)
    return unit


def convert_block(block: BasicBlock | Bottleneck, quant: QuantConfig, init: bool = True,
                  fill: float = 0.0, max_in_channels: int = 512,
                  merge_as_add: bool = False, init_split: bool = False,
                  layer2_bug: bool = False, fold_add: bool = False,
                  inner_width: float = 1.0, inner_divisor: int = 4) -> ArchBlock:
    """One residual block -> main units (one per teacher conv) + shortcut + concat merge.

    ``layer2_bug``: no merge and no shortcut; the last main unit is the block output.
    ``fold_add``: no unit for the last conv; the merge is that conv over
    ``concat[h_{n-1}, shortcut]`` (module docstring).
    ``inner_width < 1``: the block's inner channels pruned first (to multiples of
    ``inner_divisor``); only taps whose width is the teacher's are kept.
    """
    kept = None
    if inner_width < 1:
        check_inner_width(inner_width, inner_divisor, layer2_bug)
        block, kept = prune_inner(block, inner_width, inner_divisor)
    convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, Bottleneck):
        convs.append((block.conv3, block.bn3))
    folded = convs.pop() if fold_add and not layer2_bug else None
    main = [_unit_from(c, b, quant, init, fill, max_in_channels, init_split) for c, b in convs]
    n = len(main)
    if layer2_bug:
        return ArchBlock(main, block.tap_suffixes, tap_points=[*range(n), n - 1])
    shortcut = None
    if block.downsample is not None:
        shortcut = _unit_from(block.downsample[0], block.downsample[1], quant, init, fill,
                              max_in_channels, init_split)
    main_ch = block_out_channels(block)
    short_ch = main_ch if shortcut is not None else convs[0][0].in_channels
    if folded is not None:
        conv, bn = folded
        merge = ConcatMerge(conv.in_channels, short_ch, main_ch, quant, max_in_channels)
        if init:
            init_folded_merge(merge.units, conv, bn)
        suffixes = (*block.tap_suffixes[:-2], block.tap_suffixes[-1])
        full_width = 1 if inner_width < 1 else None  # only the merge output
        return ArchBlock(main, *_last_taps(suffixes, n + 1, full_width), shortcut=shortcut, merge=merge,
                         inner_kept=kept)
    merge = ConcatMerge(main_ch, short_ch, main_ch, quant, max_in_channels)
    if merge_as_add:
        init_merge_as_add(merge.units, main_ch, short_ch)
    full_width = 2 if inner_width < 1 else None  # the last conv's unit and the merge output
    return ArchBlock(main, *_last_taps(block.tap_suffixes, n + 1, full_width),
                     shortcut=shortcut, merge=merge, inner_kept=kept)


def _last_taps(suffixes: Sequence[str], n_internal: int,
               keep: int | None) -> tuple[tuple[str, ...], list[int]]:
    """Tap suffixes with their internal indices ``0..n_internal-1``: all, or the last ``keep``."""
    keep = n_internal if keep is None else keep
    return tuple(suffixes[-keep:]), list(range(n_internal))[-keep:]


def block_out_channels(block: BasicBlock | Bottleneck) -> int:
    return (block.conv3 if isinstance(block, Bottleneck) else block.conv2).out_channels


PAPER_STEM_STRIDES = (1, 1, 2)


def convert_stem(teacher: ResNet, quant: QuantConfig, init: bool,
                 strides: tuple[int, ...] = PAPER_STEM_STRIDES) -> nn.Sequential:
    """``small``: the teacher's 3x3 conv as a unit + 2x2 max-pool; ``imagenet``: random 3x3 units
    of the given ``strides`` (product 2) + 2x2 max-pool, the teacher's stride 4."""
    w = teacher.conv1.out_channels
    if teacher.stem_kind == "small":
        first = ConvUnit(teacher.conv1.in_channels, w, 1, quant,
                         quantize_weight=quant.quantize_first_conv)
        if init:
            load_conv_as_3x3(first.conv, teacher.conv1)
            load_bn(first.bn, teacher.bn1)
        return nn.Sequential(first, nn.MaxPool2d(2, 2))
    if not strides or any(s not in (1, 2) for s in strides) or math.prod(strides) != 2:
        raise ConfigError("student.stem_strides", list(strides),
                          "a non-empty list of 1 and 2 with one 2 (the 2x2 max-pool makes stride 4)")
    units = [ConvUnit(teacher.conv1.in_channels, w, strides[0], quant,
                      quantize_weight=quant.quantize_first_conv)]
    units += [ConvUnit(w, w, s, quant) for s in strides[1:]]
    return nn.Sequential(*units, nn.MaxPool2d(2, 2))


def convert_resnet(teacher: ResNet, quant: QuantConfig | None = None,
                   input_shape: tuple[int, int, int] = (3, 224, 224), head: str = "flatten",
                   init_from_teacher: bool = True, center_fill: float = 0.0,
                   max_in_channels: int = 512, init_merge_as_add: bool = False,
                   init_head_from_teacher: bool = True, init_split_from_teacher: bool = False,
                   r50_layer2_bug: bool = False, init_preadd_shift: float = 0.0,
                   fold_add: bool = False,
                   stem_strides: Sequence[int] = PAPER_STEM_STRIDES,
                   inner_width: float | Sequence[float] = 1.0, inner_divisor: int = 4) -> ArchNetStudent:
    """Build the Arch-Net student of ``teacher`` (see module docstring for the rules)."""
    quant = quant or QuantConfig()
    widths = inner_widths(inner_width, len(list(teacher.blocks())), inner_divisor, r50_layer2_bug)
    if init_preadd_shift < 0 or (init_preadd_shift > 0 and not (
            (init_merge_as_add or fold_add) and init_from_teacher)):
        raise ConfigError("student.init_preadd_shift", init_preadd_shift,
                          "0, or > 0 with init_from_teacher=true and student.init_merge_as_add=true "
                          "or student.fold_add=true")
    stem = convert_stem(teacher, quant, init_from_teacher, tuple(stem_strides))
    blocks = []
    for (name, b), width in zip(teacher.blocks(), widths):
        try:
            blocks.append((name, convert_block(b, quant, init_from_teacher, center_fill, max_in_channels,
                                               init_merge_as_add, init_split_from_teacher,
                                               r50_layer2_bug and _is_r50_layer2(name, b), fold_add,
                                               width, inner_divisor)))
        except ConfigError:
            raise
        except ValueError as e:  # a folded conv that cannot be sliced under max_in_channels
            if not fold_add:
                raise
            raise ConfigError("student.fold_add", True, f"false for this teacher: block {name}: {e}") from e
    last = tap_shapes(teacher, input_shape)[teacher.tap_names[-2]]
    hq = make_weight_quantizer(head_weight_config(quant), role="head")
    student_head = Head(head, last[0], (last[1], last[2]), teacher.fc.out_features, hq,
                        quant.logit_clip)
    if init_from_teacher and init_head_from_teacher:
        student_head.load_from_gap_fc(teacher.fc)
    if init_preadd_shift > 0:
        for _, block in blocks:
            if block.merge is None:
                continue
            if fold_add:
                shift_folded_shortcut(block, init_preadd_shift)
            else:
                shift_preadd(block, init_preadd_shift, activation_scale(quant.act))
    return ArchNetStudent(stem, blocks, student_head)


def check_inner_width(inner_width: object, inner_divisor: object, r50_layer2_bug: bool = False) -> None:
    """``student.inner_width`` in (0, 1] (1 with ``r50_layer2_bug``) and ``student.inner_divisor``
    a positive integer."""
    if isinstance(inner_width, bool) or not isinstance(inner_width, (int, float)) or not 0 < inner_width <= 1:
        raise ConfigError("student.inner_width", inner_width, "a number in (0, 1]")
    if inner_width < 1 and r50_layer2_bug:
        raise ConfigError("student.inner_width", inner_width, "1.0 with student.r50_layer2_bug=true")
    if isinstance(inner_divisor, bool) or not isinstance(inner_divisor, int) or inner_divisor < 1:
        raise ConfigError("student.inner_divisor", inner_divisor, "a positive integer")


def inner_widths(inner_width: object, n_blocks: int, inner_divisor: object = 4,
                 r50_layer2_bug: bool = False) -> list[float]:
    """One inner width per block: ``student.inner_width`` is one number in (0, 1] for every
    block or a list of ``n_blocks`` of them (checked as :func:`check_inner_width`)."""
    if isinstance(inner_width, (int, float)) or isinstance(inner_width, bool):
        check_inner_width(inner_width, inner_divisor, r50_layer2_bug)
        return [float(inner_width)] * n_blocks
    widths = list(inner_width) if isinstance(inner_width, Sequence) and not isinstance(inner_width, str) else None
    if widths is None or len(widths) != n_blocks:
        raise ConfigError("student.inner_width", inner_width,
                          f"a number in (0, 1] or a list of {n_blocks} of them, one per block")
    for w in widths:
        check_inner_width(w, inner_divisor, r50_layer2_bug)
    return [float(w) for w in widths]


def _is_r50_layer2(name: str, block: nn.Module) -> bool:
    return isinstance(block, Bottleneck) and name.startswith("layer2.")
