"""MobileNetV1/V2 teacher -> Arch-Net student.

The authors published no MobileNet code (reference section 0), so these rules are ours,
following the ResNet rules of reference 1.2:

* **stem** 3x3/2 conv + BN + ReLU(6) -> one 3x3/2 unit, weights and BN copied.
* **depthwise 3x3** (stride 1 or 2, the stride kept) -> with ``depthwise=True`` (the target
  profile accepts grouped convs) a depthwise 3x3 unit (``groups = channels``), weights
  copied; with ``depthwise=False`` a dense 3x3 unit initialised with the depthwise kernel on
  its diagonal (``W[c, c] = w_c``, zero elsewhere: the same function). Dense units above
  ``max_in_channels`` inputs are split into groups (:func:`conv_unit`).
* **pointwise 1x1** (expand, project, the final 1280-channel conv) -> 3x3 unit with the 1x1
  kernel at the centre (the other taps ``center_fill``), BN copied; split into groups when
  its input exceeds ``max_in_channels`` (MobileNetV2's 960 -> 2 x 480).
* **ReLU6** -> the unit's activation: ReLU followed by the activation quantizer, whose
  clip (``1 / act_multiplier`` for fixed-range, LSQ's learned range) is the upper bound,
  not 6. Deviation: a float student (``quant`` fp32) has a plain, unbounded ReLU.
* **linear bottleneck** (the projection has no activation) -> a unit *with* ReLU and
  quantizer, like the reference's pre-add ResNet convs. Deviation: the ``project`` tap is
  non-negative in the student while the teacher's is signed.
* **residual add** ``project + x`` -> :class:`ConcatMerge` ``CBRQ(concat[project, x])``
  (random init, or ``init_merge_as_add``), sliced above ``max_in_channels``.
* **head** GAP (+ dropout) + FC -> :class:`Head` (``flatten`` or ``gap``), FC copied.

Tap names are the teacher's (``stem``, ``features.i.expand|dw|project|out``, ``logits``).
"""
from __future__ import annotations

import torch
from torch import nn

from archnet.convert.resnet import SplitConvUnit, conv_unit
from archnet.convert.weights import init_merge_as_add, load_bn, load_conv_as_3x3
from archnet.models.mobilenet import (
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    MobileNetV1,
    MobileNetV2,
)
from archnet.models.student import ArchBlock, ArchNetStudent, Head
from archnet.models.taps import tap_shapes
from archnet.ops.quant import QuantConfig, head_weight_config, make_weight_quantizer
from archnet.ops.units import ConcatMerge, ConvUnit


@torch.no_grad()
def load_depthwise_as_dense(dst: nn.Conv2d, src: nn.Conv2d) -> None:
    """Place depthwise kernel ``c`` of ``src`` at ``dst.weight[c, c]``; zeros elsewhere."""
    dst.weight.zero_()
    idx = torch.arange(src.out_channels)
    dst.weight[idx, idx] = src.weight[:, 0]


class _Rules:
    def __init__(self, quant: QuantConfig, init: bool, fill: float, depthwise: bool,
                 max_in_channels: int) -> None:
        self.quant, self.init, self.fill = quant, init, fill
        self.depthwise, self.max_in = depthwise, max_in_channels

    def unit(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, first: bool = False) -> nn.Module:
        """One teacher conv + BN -> one Arch-Net unit (see module docstring)."""
        cin, cout, stride = conv.in_channels, conv.out_channels, conv.stride[0]
        is_dw = conv.groups > 1 and conv.groups == cin == cout
        if conv.groups > 1 and not is_dw:
            raise ValueError(f"grouped conv with groups={conv.groups} is not a MobileNet conv")
        if first:
            unit: nn.Module = ConvUnit(cin, cout, stride, self.quant,
                                       quantize_weight=self.quant.quantize_first_conv)
        else:
            groups = cin if is_dw and self.depthwise else 1
            unit = conv_unit(cin, cout, stride, self.quant, self.max_in, groups)
        if not self.init:
            return unit
        if isinstance(unit, SplitConvUnit):
            if is_dw:  # the diagonal lives inside the groups: exact, like the dense case
                for i, u in enumerate(unit.units):
                    c = cin // unit.groups
                    part = nn.Conv2d(c, c, 3, groups=c, bias=False)
                    part.weight.data.copy_(conv.weight[i * c:(i + 1) * c])
                    load_depthwise_as_dense(u.conv, part)
                    _load_bn_slice(u.bn, bn, i * c, c)
            else:
                unit.load_block_diagonal(conv, bn, self.fill)
            return unit
        if is_dw and not self.depthwise:
            load_depthwise_as_dense(unit.conv, conv)
        else:
            load_conv_as_3x3(unit.conv, conv, self.fill)
        load_bn(unit.bn, bn)
        return unit

    def conv_bn_act(self, m: ConvBNAct, first: bool = False) -> nn.Module:
        return self.unit(m[0], m[1], first)


@torch.no_grad()
def _load_bn_slice(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, start: int, n: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[start:start + n])


def _inverted_residual(b: InvertedResidual, r: _Rules, merge_as_add: bool) -> ArchBlock:
    acts = list(b.conv)[: 1 + b.has_expand]
    main = [r.conv_bn_act(m) for m in acts] + [r.unit(b.conv[-2], b.conv[-1])]
    n = len(main)
    if not b.use_res_connect:
        return ArchBlock(main, b.tap_suffixes, list(range(n)))
    c = b.out_channels
    merge = ConcatMerge(c, c, c, r.quant, r.max_in)
    if merge_as_add:
        init_merge_as_add(merge.units, c, c)
    return ArchBlock(main, b.tap_suffixes, list(range(n + 1)), shortcut=None, merge=merge)


def _convert_block(b: nn.Module, r: _Rules, merge_as_add: bool) -> ArchBlock:
    if isinstance(b, InvertedResidual):
        return _inverted_residual(b, r, merge_as_add)
    if isinstance(b, DepthwiseSeparable):
        return ArchBlock([r.conv_bn_act(b.dw), r.conv_bn_act(b.pw)], b.tap_suffixes, [0, 1])
    if isinstance(b, ConvBNAct):
        return ArchBlock([r.conv_bn_act(b)], b.tap_suffixes, [0])
    raise TypeError(f"no MobileNet rule for {type(b).__name__}")


def convert_mobilenet(teacher: MobileNetV1 | MobileNetV2, quant: QuantConfig | None = None,
                      input_shape: tuple[int, int, int] = (3, 224, 224), head: str = "flatten",
                      depthwise: bool = True, init_from_teacher: bool = True,
                      center_fill: float = 0.0, max_in_channels: int = 512,
                      init_merge_as_add: bool = False,
                      init_head_from_teacher: bool = True) -> ArchNetStudent:
    """Build the Arch-Net student of a MobileNetV1/V2 ``teacher`` (rules: module docstring)."""
    quant = quant or QuantConfig()
    r = _Rules(quant, init_from_teacher, center_fill, depthwise, max_in_channels)
    stem_src = teacher.features[0] if isinstance(teacher, MobileNetV2) else teacher.stem
    stem = r.conv_bn_act(stem_src, first=True)
    blocks = [(name, _convert_block(b, r, init_merge_as_add)) for name, b in teacher.blocks()]
    fc = teacher.classifier[1] if isinstance(teacher, MobileNetV2) else teacher.fc
    last = tap_shapes(teacher, input_shape)[teacher.tap_names[-2]]
    hq = make_weight_quantizer(head_weight_config(quant), role="head")
    student_head = Head(head, last[0], (last[1], last[2]), fc.out_features, hq, quant.logit_clip)
    if init_from_teacher and init_head_from_teacher:
        student_head.load_from_gap_fc(fc)
    return ArchNetStudent(stem, blocks, student_head)
