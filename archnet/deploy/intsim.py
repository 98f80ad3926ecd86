"""Integer-only simulation of a deploy student, checked against the fake-quantized student.

Every tensor between layers is ``codes * scale`` with int32 ``codes`` and a per-channel
scale known offline (:class:`QTensor`). Per layer:

* conv: ``acc = conv2d(codes_in, weight_codes)`` in int32 (one accumulator per run of input
  channels sharing a scale, e.g. the two halves of a concat of LSQ activations);
* requantization to the next activation's codes, per output channel ``c``:
  ``t = sum_seg A[seg, c] acc_seg + B[c]`` with ``A = s_in * w_scale[c] / out_scale`` and
  ``B = bias[c] / out_scale`` (BN, the 0.1 multiplier and all scales folded, see
  :mod:`archnet.deploy.fold`), computed as ``(sum m acc + b + 2^(sh-1)) >> sh`` in int64 with
  fixed-point multipliers ``m = round(A 2^sh)`` (31 significant bits), ``b = round(B 2^sh)``,
  then clipped to ``[qmin, qmax]``. That is exactly ``floor(t + 1/2)``, the DoReFa rule of the
  fixed-range activation ``round(clip(0.1 x, 0, 1) M)``; LSQ ties go to even;
* max-pool, concat and channel slices act on codes unchanged (scales are positive);
* head: integer FC accumulator, dequantized to float logits at the end (bias added, clip).

Multipliers, shifts and offsets are computed once per layer from the static scales (the
only floating-point step) on the first batch and cached. The network input is quantized
to int8, ``codes = clip(round(x / s_in), -127, 127)``; :func:`compare` feeds the same
quantized input (``codes * s_in``) to the fake-quantized PyTorch student.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.deploy.modules import DeployConv, DeployHead, trace_deploy

INT32_MAX = 2**31 - 1
_INT64_BUDGET = 2**62


@dataclass
class QTensor:
    """``codes * scale``: int32 codes ``[N, C, ...]``, a float64 scale per channel ``[C]`` and
    ``bound``, the largest ``|code|`` the producing quantizer can emit (static)."""

    codes: Tensor
    scale: Tensor
    bound: int


def quantize_input(x: Tensor, scale: float) -> QTensor:
    """int8 network input ``clip(round(x / scale), -127, 127)``."""
    codes = torch.round(x / scale).clamp_(-127, 127).to(torch.int32)
    return QTensor(codes, torch.full((x.shape[1],), float(scale), dtype=torch.float64), 127)


def _segments(scale: Tensor) -> list[tuple[int, int, float]]:
    """Runs ``(start, end, s)`` of consecutive channels with equal scale."""
    runs: list[tuple[int, int, float]] = []
    values = scale.tolist()
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, values[start]))
            start = i
    return runs


@dataclass
class _Requant:
    segs: list[tuple[int, int, float]]
    mult: Tensor  # int64 [n_seg, C]
    offset: Tensor  # int64 [C]
    shift: Tensor  # int64 [C]
    qmin: int
    qmax: int
    half_even: bool


def _fixed_point(a: Tensor, b: Tensor, acc_bound: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Multipliers ``round(a 2^sh)``, offsets ``round(b 2^sh)`` with ``|a| 2^sh < 2^31`` and the
    int64 sum bounded by ``2^62`` (``a`` [n_seg, C], ``b`` [C], ``acc_bound`` [n_seg, C])."""
    amax = a.abs().amax(0)
    exp = torch.where(amax > 0, torch.floor(torch.log2(amax.clamp_min(1e-300))), torch.zeros_like(amax))
    shift = (30 - exp).clamp(1, 62)
    for _ in range(64):
        p = torch.pow(2.0, shift)
        total = (a.abs() * p).round().mul(acc_bound).sum(0) + (b.abs() * p).round() + p
        over = total >= _INT64_BUDGET
        if not bool(over.any()):
            break
        shift = torch.where(over, shift - 1, shift)
    if bool((shift < 1).any()):
        raise OverflowError("requantization does not fit int64 fixed point")
    p = torch.pow(2.0, shift)
    return (a * p).round().long(), (b * p).round().long(), shift.long()


def _round_shift(v: Tensor, shift: Tensor, half_even: bool) -> Tensor:
    """``floor(v / 2^shift + 1/2)`` on int64 (ties to even when ``half_even``)."""
    half = torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)
    u = v + half
    q = torch.bitwise_right_shift(u, shift)
    if half_even:  # exact ties (u a multiple of 2^shift) round down to the even neighbour
        tie = torch.bitwise_and(u, 2 * half - 1) == 0
        q = q - (tie & (torch.bitwise_and(q, 1) == 1)).long()
    return q


class IntSim(torch.fx.Interpreter):
    """Runs a deploy student (from :func:`~archnet.deploy.fold.deploy_student`) on
    :class:`QTensor` inputs with integer arithmetic; returns float64 logits."""

    def __init__(self, deploy: nn.Module) -> None:
        super().__init__(trace_deploy(deploy))
        self._plans: dict[str, Any] = {}

    def __call__(self, x: QTensor) -> Tensor:
        return self.run(x)

    # --- layers -------------------------------------------------------------------------
    def _conv_plan(self, name: str, m: DeployConv, x: QTensor) -> _Requant:
        if m.codes is None or m.act is None:
            raise ValueError(f"{name}: integer simulation needs quantized weights and activations")
        segs = _segments(x.scale)
        if m.groups != 1 and len(segs) != 1:
            raise ValueError(f"{name}: grouped conv over inputs with different scales")
        wabs = m.codes.long().abs().sum((2, 3)).double()  # [Cout, Cin/g]
        bound = [wabs[:, a:b].sum(1) * x.bound if len(segs) > 1 else wabs.sum(1) * x.bound
                 for a, b, _ in segs]
        acc_bound = torch.stack(bound)
        if bool((acc_bound > INT32_MAX).any()):
            raise OverflowError(f"{name}: int32 accumulator may overflow")
        ws = m.scale.double() / m.act.out_scale
        a = torch.stack([s * ws for _, _, s in segs])
        mult, offset, shift = _fixed_point(a, m.bias.double() / m.act.out_scale, acc_bound)
        return _Requant(segs, mult, offset, shift, m.act.qmin, m.act.qmax, m.act.rounding == "half_even")

    def _conv(self, name: str, m: DeployConv, x: QTensor) -> QTensor:
        plan = self._plans.get(name) or self._plans.setdefault(name, self._conv_plan(name, m, x))
        w = m.codes.to(torch.int32)
        v: Tensor | None = None
        for i, (a, b, _) in enumerate(plan.segs):
            wi = w if len(plan.segs) == 1 else w[:, a:b]
            acc = F.conv2d(x.codes[:, a:b], wi, None, m.stride, 1, 1, m.groups)  # int32
            term = acc.long().mul_(plan.mult[i].view(1, -1, 1, 1))  # int64
            v = term if v is None else v.add_(term)
        v = v.add_(plan.offset.view(1, -1, 1, 1))
        q = _round_shift(v, plan.shift.view(1, -1, 1, 1), plan.half_even).clamp_(plan.qmin, plan.qmax)
        scale = torch.full((m.out_channels,), m.act.out_scale, dtype=torch.float64)
        return QTensor(q.to(torch.int32), scale, max(-plan.qmin, plan.qmax))

    def _head(self, m: DeployHead, x: QTensor) -> Tensor:
        if m.codes is None:
            raise ValueError("head: integer simulation needs quantized classifier weights")
        n = x.codes.shape[0]
        if m.kind == "gap":
            hw = x.codes[0, 0].numel()
            feats, fscale = x.codes.flatten(2).sum(2), x.scale / hw
        else:
            hw = x.codes[0, 0].numel() if x.codes.dim() > 2 else 1
            feats, fscale = x.codes.flatten(1), x.scale.repeat_interleave(hw)
        w = m.codes.to(torch.int32)
        if x.bound * int(m.codes.long().abs().sum(1).max()) * (hw if m.kind == "gap" else 1) > INT32_MAX:
            raise OverflowError("head: int32 accumulator may overflow")
        z = m.bias.double().expand(n, -1).clone()
        for a, b, s in _segments(fscale):
            acc = feats[:, a:b].to(torch.int32) @ w[:, a:b].t()  # int32 accumulator
            z += acc.double() * (s * m.scale.double())  # dequantized at the end
        return z if m.logit_clip is None else z.clamp(-m.logit_clip, m.logit_clip)

    # --- fx dispatch ----------------------------------------------------------------------
    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        m = self.fetch_attr(target)
        (x,) = args
        if isinstance(m, DeployConv):
            return self._conv(target, m, x)
        if isinstance(m, DeployHead):
            return self._head(m, x)
        if isinstance(m, nn.MaxPool2d):
            return QTensor(F.max_pool2d(x.codes, m.kernel_size, m.stride, m.padding), x.scale, x.bound)
        raise NotImplementedError(f"integer simulation of module {target} ({type(m).__name__})")

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target is torch.cat:
            xs, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim != 1:
                raise NotImplementedError("concat along a dimension other than channels")
            return QTensor(torch.cat([t.codes for t in xs], 1), torch.cat([t.scale for t in xs]),
                           max(t.bound for t in xs))
        if target is operator.getitem and isinstance(args[0], QTensor):
            x, idx = args
            ch = idx[1] if isinstance(idx, tuple) and len(idx) > 1 else slice(None)
            return QTensor(x.codes[idx], x.scale[ch], x.bound)
        raise NotImplementedError(f"integer simulation of {target}")

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError(f"integer simulation of method {target}")


def integer_ready(deploy: nn.Module) -> str | None:
    """``None`` when every layer of ``deploy`` has integer weights and quantized activations,
    else the first layer that has not (float layers cannot be simulated in integers)."""
    for name, m in deploy.named_modules():
        if isinstance(m, DeployConv) and (m.codes is None or m.act is None):
            return name
        if isinstance(m, DeployHead) and m.codes is None:
            return name
    return None


@torch.no_grad()
def compare(student: nn.Module, images: Tensor, deploy: nn.Module | None = None,
            input_scale: float | None = None, batch_size: int = 250,
            check_exact: bool = False) -> dict[str, float]:
    """Integer simulation vs the fake-quantized ``student`` (eval mode) on ``images``.

    Both see the same int8-quantized input (``input_scale`` defaults to ``max|images|/127``).
    Returns the sample count, ``top1_agreement`` and ``max_logit_diff`` (integer vs fake
    quant in float32). With ``check_exact`` also, in float64:

    * ``exact_*``: vs the deploy model (same float32 scales and biases as the ONNX file) --
      the integer pipeline reproduces it to rounding;
    * ``fq64_*``: vs the fake-quantized student, which differs from the deploy parameters by
      their float32 storage (about 1e-7 relative).

    What separates the integer result from the float32 student is float32 rounding flipping
    an activation code now and then, which then propagates (more so in deeper, untrained
    networks and at 8-bit activations, whose grid has more boundaries).
    """
    from archnet.deploy.fold import deploy_student

    was_training = student.training
    student.eval()
    deploy = deploy if deploy is not None else deploy_student(student)
    sim = IntSim(deploy)
    scale = float(input_scale) if input_scale is not None else float(images.abs().max()) / 127
    refs: dict[str, nn.Module] = {"": student}
    if check_exact:
        refs.update(exact_=copy.deepcopy(deploy).double(), fq64_=copy.deepcopy(student).double())
    agree = dict.fromkeys(refs, 0)
    diff = dict.fromkeys(refs, 0.0)
    for x in images.split(batch_size):
        q = quantize_input(x, scale)
        z = sim(q)
        for key, model in refs.items():
            dtype = torch.float64 if key else x.dtype
            ref = model(q.codes.to(dtype) * scale).double()
            agree[key] += int((z.argmax(1) == ref.argmax(1)).sum())
            diff[key] = max(diff[key], float((z - ref).abs().max()))
    student.train(was_training)
    n = len(images)
    out: dict[str, float] = {"n": n, "input_scale": scale}
    for key in refs:
        out[f"{key}top1_agreement"] = agree[key] / n
        out[f"{key}max_logit_diff"] = diff[key]
    return out
