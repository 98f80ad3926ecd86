"""BatchNorm folding and weight baking: trained student -> deploy student.

Eval-mode BN after a conv (or linear) layer is a per-output-channel affine map, so

    BN(W * x + b) = (g W) * x + (beta + (b - mu) g),   g = gamma / sqrt(var + eps).

With fake quantization the conv weight is ``q(W)`` (on the quantizer's integer grid,
``codes * s``), so the folded weight is ``codes * (s g)``: the integer codes are unchanged and
the scale becomes per output channel. An activation quantizer with input step ``in_scale``
and output step ``out_scale`` (:class:`~archnet.ops.grid.ActGrid`) is a standard uniform
quantizer on ``r z`` with ``r = out_scale / in_scale``; ``r`` is folded into the scales and
bias too (fixed-range activations: ``r = 0.1``, the multiplier), so every activation is
``clip(round(z' / out_scale), qmin, qmax) * out_scale`` of the folded conv's output ``z'``.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from archnet.deploy.modules import DeployConv, DeployHead, DeployMerge, input_scales
from archnet.models.student import Head
from archnet.ops.grid import ActGrid
from archnet.ops.layers import QConv2d, QLinear
from archnet.ops.units import ConcatMerge, ConvUnit

_INT8_MAX = 127


@torch.no_grad()
def fold_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold eval-mode ``bn`` into the layer ``(weight, bias)`` whose output channels are dim 0.

    Returns ``(g W, beta + (b - mu) g)`` with ``g = gamma / sqrt(var + eps)``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    g = torch.rsqrt(bn.running_var + bn.eps)
    beta = torch.zeros_like(g)
    if bn.affine:
        g = g * bn.weight
        beta = bn.bias
    b = torch.zeros_like(g) if bias is None else bias
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * g.view(shape), beta + (b - bn.running_mean) * g


def _act_grid(act: nn.Module) -> ActGrid | None:
    if isinstance(act, nn.ReLU):
        return None
    if hasattr(act, "act_grid"):
        return act.act_grid()
    raise TypeError(f"cannot deploy activation {type(act).__name__}: ReLU or a quantizer with act_grid()")


def _int_codes(codes: Tensor, qmin: int, qmax: int) -> Tensor:
    small = max(-qmin, qmax) <= _INT8_MAX
    return codes.to(torch.int8 if small else torch.int16)


def _method(quantizer: nn.Module) -> str:
    return type(quantizer).__name__


@torch.no_grad()
def fold_unit(unit: ConvUnit) -> DeployConv:
    """``conv -> BN -> act`` unit -> :class:`DeployConv` (BN and activation rescale folded)."""
    conv: QConv2d = unit.conv
    act = _act_grid(unit.act)
    r = 1.0 if act is None else act.out_scale / act.in_scale
    g, bias = fold_bn(torch.ones(conv.out_channels, device=conv.weight.device), conv.bias, unit.bn)
    kw = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, stride=conv.stride[0],
              groups=conv.groups, bias=bias * r, act=act)
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.dilation != (1, 1):
        raise ValueError(f"not an Arch-Net unit: kernel {conv.kernel_size}, padding {conv.padding}")
    wq = conv.weight_quantizer
    if not hasattr(wq, "export_grid"):  # float weights
        return DeployConv(weight=conv.weight * (g * r).view(-1, 1, 1, 1), **kw)
    grid = wq.export_grid(conv.weight)
    scale = grid.scale.reshape(-1).expand(conv.out_channels) * g * r
    return DeployConv(codes=_int_codes(grid.codes, grid.qmin, grid.qmax), scale=scale.contiguous(),
                      w_bits=grid.bits, w_method=_method(wq), **kw)


@torch.no_grad()
def fold_head(head: Head) -> DeployHead:
    """Classifier -> :class:`DeployHead` with the FC weight on its integer grid."""
    fc: QLinear = head.fc
    bias = fc.bias.detach().clone() if fc.bias is not None else fc.weight.new_zeros(fc.out_features)
    wq = fc.weight_quantizer
    if not hasattr(wq, "export_grid"):
        return DeployHead(head.kind, bias, head.logit_clip, weight=fc.weight.detach().clone())
    grid = wq.export_grid(fc.weight)
    scale = grid.scale.reshape(-1).expand(fc.out_features).contiguous()
    return DeployHead(head.kind, bias, head.logit_clip, codes=_int_codes(grid.codes, grid.qmin, grid.qmax),
                      scale=scale, w_bits=grid.bits, w_method=_method(wq))


def _swap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, ConvUnit):
            setattr(module, name, fold_unit(child))
        elif isinstance(child, ConcatMerge):
            units = [fold_unit(u) for u in child.units]
            setattr(module, name, DeployMerge(units, child.main_ch, child.short_ch))
        elif isinstance(child, Head):
            setattr(module, name, fold_head(child))
        else:
            _swap(child)


def deploy_student(student: nn.Module) -> nn.Module:
    """A folded, baked, eval-mode copy of ``student`` (the student itself is not modified).

    Every :class:`ConvUnit`, :class:`ConcatMerge` and :class:`Head` is replaced; anything
    left that still needs training-time machinery (a BN, a quantizer) raises ``ValueError``.
    Layers with quantized weights and a quantized input get an int32 bias on a power-of-two
    fraction of the accumulator step ``s_x s_w`` (:meth:`DeployConv.quantize_bias`).
    """
    model = copy.deepcopy(student).eval()
    _swap(model)
    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, QConv2d, QLinear)) or hasattr(m, "export_grid"):
            raise ValueError(f"module {name!r} ({type(m).__name__}) is not part of an Arch-Net deploy student")
    for name, s_in in input_scales(model).items():
        if s_in is not None:  # int32 bias (see archnet.deploy.qdq for why)
            model.get_submodule(name).quantize_bias(s_in)
    model.requires_grad_(False)
    return model
