"""A function-preserving start for a converted ResNet student (concat merges as adds).

The rules copy every conv and BN, yet three things keep the student from computing its
teacher's function when distillation starts:

1. **The pre-add tensor is signed.** The teacher adds ``p`` (the last main BN's output,
   negative in places) to the shortcut, then applies ReLU; the student's last main unit
   applies its unsigned activation to ``p`` first, so the merge sees ``relu(p)``.
   :func:`shift_preadd` raises that unit's BN bias by ``beta = max(0, k |gamma| - b)`` per
   channel (``k`` standard deviations of the BN output below its mean stay positive), the
   same for a projection shortcut's BN, and records ``a * beta`` (``a``: the activation scale)
   as the block's ``preadd_offset`` so the tapped pre-add tensor still reads ``p``. Analytic,
   at conversion (``student.init_preadd_shift=k``); it costs range: an activation that clips
   at ``1 / m`` BN units now holds ``p + beta``.
2. **Scales change.** Fixed-range activations output ``a`` times the teacher's features and
   quantized weights have their own scale, so the teacher's running statistics no longer fit.
3. **The merge's BN normalises** ``y = main + shortcut`` to unit variance (``gamma = 1``), where
   the teacher passes ``u = p + shortcut`` on unchanged.

A student converted with ``fold_add`` has no pre-add unit (1 does not arise; a projection
shortcut is shifted by :func:`shift_folded_shortcut`) and its merge is the last conv.

:func:`calibrate_student` fixes 2 and 3 on a batch of images: unit by unit, each fed by the
calibrated units before it (eval mode), it fits the unit's BN to the teacher's tensor at the
same place by per-channel least squares, ``z ~ A y + B`` with ``A = cov(y, z) / var(y)``,
``B = mean(z) - A mean(y)`` (``y``: the unit's conv output; ``z``: the teacher's BN output plus
the student's bias shift, or ``u`` for a merge), and writes it as running statistics
``(mean(y), var(y))``, ``gamma = A sqrt(var(y) + eps)``, ``beta = A mean(y) + B``: eval mode then
computes ``A y + B``, and training mode (batch statistics) about the same.

With ``refit`` it first re-solves the weights of every merge conv, and of every main conv
that reads pruned channels (``student.inner_width``), by ridge least squares on the same
batch (:func:`refit_conv`): what the rules' initialisation cannot carry (the channels a
pruned block dropped, the off-diagonal blocks a sliced merge lost, the clipping of the
student's activations) is then fitted, not only scaled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.models.resnet import BasicBlock, Bottleneck, ResNet
from archnet.models.student import ArchBlock, ArchNetStudent
from archnet.ops.batchnorm import recalibrate


def output_bns(unit: nn.Module) -> list[nn.BatchNorm2d]:
    """The BNs whose outputs, concatenated in order, are ``unit``'s output channels (one for a
    :class:`~archnet.ops.units.ConvUnit`, one per group for a split unit)."""
    if isinstance(getattr(unit, "bn", None), nn.BatchNorm2d):
        return [unit.bn]
    return [u.bn for u in unit.units]


@torch.no_grad()
def shift_bn(bns: list[nn.BatchNorm2d], sigmas: float) -> Tensor:
    """Add ``beta = max(0, sigmas |gamma| - b)`` to each BN's bias; returns ``beta`` (all channels)."""
    shifts = []
    for bn in bns:
        beta = (sigmas * bn.weight.abs() - bn.bias).clamp_min(0.0)
        bn.bias.add_(beta)
        shifts.append(beta)
    return torch.cat(shifts)


@torch.no_grad()
def shift_preadd(block: ArchBlock, sigmas: float, act_scale: float) -> None:
    """Shift ``block``'s last main unit (and projection shortcut) so ``k = sigmas`` standard
    deviations of their signed BN outputs survive the activation (module docstring, 1)."""
    if block.merge is None:
        raise ValueError("shift_preadd needs a block with a concat merge")
    beta = shift_bn(output_bns(block.main[-1]), sigmas)
    if block.shortcut is not None:
        shift_bn(output_bns(block.shortcut), sigmas)
    block.preadd_offset = (act_scale * beta).view(-1, 1, 1)


@torch.no_grad()
def shift_folded_shortcut(block: ArchBlock, sigmas: float) -> None:
    """The :func:`shift_preadd` of a block whose add is folded into its last conv
    (``student.fold_add``): only a projection shortcut carries a signed tensor; its BN bias
    rises by ``beta`` and the folded merge's bias (identity weight on the shortcut half) drops
    by ``beta``, so the block computes the same sum. No tap reads the shortcut."""
    if block.merge is None:
        raise ValueError("shift_folded_shortcut needs a block with a concat merge")
    if block.shortcut is None:
        return  # an identity shortcut is a block output: already >= 0
    beta = shift_bn(output_bns(block.shortcut), sigmas)
    for unit, part in zip(block.merge.units, beta.chunk(len(block.merge.units))):
        unit.bn.bias.sub_(part)


@torch.no_grad()
def fit_bn(bn: nn.BatchNorm2d, y: Tensor, z: Tensor) -> None:
    """Make ``bn(y) ~ A y + B``, the per-channel least-squares fit of ``z`` (module docstring)."""
    dims = (0, 2, 3)
    var_y, mu_y = torch.var_mean(y, dims, unbiased=False)
    mu_z = z.mean(dims)
    cov = ((y - mu_y.view(1, -1, 1, 1)) * (z - mu_z.view(1, -1, 1, 1))).mean(dims)
    a = torch.where(var_y > 0, cov / var_y.clamp_min(1e-30), torch.zeros_like(cov))
    bn.running_mean.copy_(mu_y)
    bn.running_var.copy_(var_y)
    bn.weight.copy_(a * (var_y + bn.eps).sqrt())
    bn.bias.copy_(mu_z)  # = A mean(y) + B


@torch.no_grad()
def fit_unit(unit: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Fit ``unit``'s BN(s) so its pre-activation matches ``target``; returns its output."""
    if hasattr(unit, "conv"):
        y = unit.conv(x)
        fit_bn(unit.bn, y, target)
        return unit.act(unit.bn(y))
    outs = []  # a split unit: input group g -> output group g
    groups = len(unit.units)
    for u, xg, tg in zip(unit.units, x.chunk(groups, 1), target.chunk(groups, 1)):
        outs.append(fit_unit(u, xg, tg))
    return torch.cat(outs, 1)


@torch.no_grad()
def refit_conv(conv: nn.Conv2d, x: Tensor, target: Tensor, ridge: float = 1e-3, chunk: int = 64) -> None:
    """``W <- argmin |conv_W(x) - target|^2 + lam |W - W_0|^2`` over centred patches (the BN after
    the conv absorbs offsets): ``(G + lam I) W^T = C + lam W_0^T`` with ``G`` the patch covariance,
    ``C`` the patch-target covariance (sums over every output position), ``lam = ridge
    tr(G) / d``. A learned weight step (LSQ) is then re-initialised on the new weights."""
    if conv.groups != 1:
        raise ValueError("refit_conv needs a dense conv")
    w0 = conv.weight.detach().double().reshape(conv.out_channels, -1)
    d = w0.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, conv.out_channels, dtype=torch.float64)
    sum_p = torch.zeros(d, dtype=torch.float64)
    sum_t = torch.zeros(conv.out_channels, dtype=torch.float64)
    n = 0
    for xb, tb in zip(x.split(chunk), target.split(chunk)):
        p = F.unfold(xb.double(), conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        p = p.transpose(1, 2).reshape(-1, d)
        t = tb.double().flatten(2).transpose(1, 2).reshape(-1, conv.out_channels)
        gram += p.T @ p
        cross += p.T @ t
        sum_p += p.sum(0)
        sum_t += t.sum(0)
        n += len(p)
    mu_p, mu_t = sum_p / n, sum_t / n
    gram -= n * torch.outer(mu_p, mu_p)
    cross -= n * torch.outer(mu_p, mu_t)
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
    w = torch.linalg.solve(gram + lam * torch.eye(d, dtype=torch.float64), cross + lam * w0.T).T
    conv.weight.copy_(w.reshape_as(conv.weight).to(conv.weight.dtype))
    quantizer = getattr(conv, "weight_quantizer", None)
    if hasattr(quantizer, "initialize_step"):
        quantizer.initialize_step(conv.weight)


def _bias_shift(unit: nn.Module, teacher_bias: Tensor) -> Tensor:
    """The student's BN bias minus the teacher's (a :func:`shift_preadd` shift, else 0)."""
    bias = torch.cat([bn.bias for bn in output_bns(unit)])
    return (bias - teacher_bias).view(1, -1, 1, 1)


@torch.no_grad()
def _calibrate_block(tb: BasicBlock | Bottleneck, sb: ArchBlock, h_t: Tensor, h_s: Tensor,
                     refit: bool = False) -> tuple[Tensor, Tensor, float]:
    convs = [(tb.conv1, tb.bn1), (tb.conv2, tb.bn2)] + ([(tb.conv3, tb.bn3)] if isinstance(tb, Bottleneck) else [])
    if sb.merge is None or len(sb.main) not in (len(convs), len(convs) - 1):
        raise ValueError("calibrate_student needs blocks converted with a concat merge")
    t, s = h_t, h_s
    for i, ((conv, bn), unit) in enumerate(zip(convs, sb.main)):
        z = bn(conv(t))
        # a pruned unit (student.inner_width) holds the kept channels of the teacher's tensor
        kept = sb.inner_kept[i] if i < len(sb.inner_kept) else slice(None)
        target = z[:, kept] + _bias_shift(unit, bn.bias[kept])
        if refit and 0 < i <= len(sb.inner_kept) and hasattr(unit, "conv"):  # reads pruned channels
            refit_conv(unit.conv, s, target)
        s = fit_unit(unit, s, target)
        t = F.relu(z)
    if len(sb.main) < len(convs):  # fold_add: the merge is the last conv, fed h_{n-1}
        conv, bn = convs[-1]
        z = bn(conv(t))
    short_t = h_t if tb.downsample is None else tb.downsample(h_t)
    short_s = h_s
    if sb.shortcut is not None:
        short_s = fit_unit(sb.shortcut, h_s, short_t + _bias_shift(sb.shortcut, tb.downsample[1].bias))
    u = z + short_t  # the teacher's pre-ReLU sum
    merge, n = sb.merge, sb.merge.n_slices
    outs, pre = [], []
    for unit, m, sc, ug in zip(merge.units, s.chunk(n, 1), short_s.chunk(n, 1), u.chunk(n, 1)):
        if refit:
            refit_conv(unit.conv, torch.cat([m, sc], 1), ug)
        y = unit.conv(torch.cat([m, sc], 1))
        fit_bn(unit.bn, y, ug)
        pre.append(unit.bn(y))
        outs.append(unit.act(pre[-1]))
    err = float((torch.cat(pre, 1) - u).norm() / u.norm().clamp_min(1e-12))
    return F.relu(u), torch.cat(outs, 1), err


@torch.no_grad()
def calibrate_student(student: ArchNetStudent, teacher: ResNet, x: Tensor, refit: bool = False) -> list[float]:
    """Fit every BN of ``student`` on the batch ``x`` (and with ``refit`` the weights of the merge
    convs and of convs reading pruned channels; module docstring). A ``small`` stem's unit
    is fitted to the teacher's; the three random units of an ``imagenet`` stem only get the
    batch's statistics. One training-mode forward first lets LSQ quantizers take their initial
    steps (running statistics are all rewritten afterwards). Returns, per block, the relative
    error ``|pre - u| / |u|`` of the merge's pre-activation against the teacher's pre-ReLU sum
    after calibration."""
    if not isinstance(teacher, ResNet):
        raise TypeError(f"calibrate_student needs a ResNet teacher, got {type(teacher).__name__}")
    was_training = student.training
    teacher.eval()
    try:
        student.train()
        student(x)  # LSQ quantizers take their initial steps on the first training forward
        student.eval()
        h_t = teacher.forward_stem(x)
        if teacher.stem_kind == "small":
            out = fit_unit(student.stem[0], x, teacher.bn1(teacher.conv1(x)))
            h_s = student.stem[1:](out)
        else:
            recalibrate(student.stem, student.stem, [x])  # the batch's statistics (student in eval mode)
            h_s = student.stem(x)
        errors = []
        for (_, tb), (_, sb) in zip(teacher.blocks(), student.blocks()):
            h_t, h_s, err = _calibrate_block(tb, sb, h_t, h_s, refit)
            errors.append(err)
    finally:
        student.train(was_training)
    return errors
