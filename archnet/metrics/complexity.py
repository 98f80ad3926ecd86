"""Hook-based parameter and MAC counts, and the teacher-vs-student table.

MACs of a conv: ``C_out * (C_in / groups) * k_h * k_w * H_out * W_out``; of a linear layer:
``in * out`` per row. Pooling, BN (folded at deploy), activations and concatenation count 0.
BitOPs = MACs x weight bits x activation bits. Counts are for one input of ``input_shape``;
models may live on the ``meta`` device (shapes only, no arithmetic), which makes the 224 px
table cheap.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    """Parameters and MACs of one forward; ``macs = conv_macs + linear_macs``."""

    params: int
    conv_macs: int
    linear_macs: int

    @property
    def macs(self) -> int:
        return self.conv_macs + self.linear_macs


@torch.no_grad()
def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Complexity:
    """Count parameters and the conv/linear MACs of one forward on a single input."""
    conv = linear = 0

    def conv_hook(m: nn.Conv2d, _inp, out) -> None:
        nonlocal conv
        k = m.kernel_size[0] * m.kernel_size[1]
        conv += out.shape[1] * (m.in_channels // m.groups) * k * out.shape[2] * out.shape[3]

    def linear_hook(m: nn.Linear, inp, _out) -> None:
        nonlocal linear
        rows = inp[0].numel() // inp[0].shape[-1]
        linear += rows * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return Complexity(count_params(model), conv, linear)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a single input of ``input_shape``."""
    return measure(model, input_shape).macs


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bitops(macs: int, weight_bits: int, act_bits: int) -> int:
    """BitOPs = MACs x w_bits x a_bits."""
    return macs * weight_bits * act_bits


def _pair(family: str, input_shape: tuple[int, int, int], head: str, depthwise: bool,
          resnet_options: Mapping[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    from archnet.convert.mobilenet import convert_mobilenet
    from archnet.convert.resnet import convert_resnet
    from archnet.models import mobilenet, resnet

    factories: dict[str, Callable[[], nn.Module]] = {
        "resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50,
        "mobilenet_v1": mobilenet.mobilenet_v1, "mobilenet_v2": mobilenet.mobilenet_v2}
    teacher = factories[family]()
    if family.startswith("resnet"):
        return teacher, convert_resnet(teacher, input_shape=input_shape, head=head,  # type: ignore[arg-type]
                                       **(resnet_options or {}))
    return teacher, convert_mobilenet(teacher, input_shape=input_shape, head=head,  # type: ignore[arg-type]
                                      depthwise=depthwise)


FAMILIES = ("resnet18", "resnet34", "resnet50", "mobilenet_v1", "mobilenet_v2")


def complexity_table(families: Sequence[str] = FAMILIES, input_size: int = 224,
                     head: str = "gap", depthwise: bool = True, device: str = "meta",
                     resnet_options: Mapping[str, Any] | None = None) -> list[dict]:
    """One row per family: teacher and student (deploy, float) params and MACs at
    ``input_size``; 1000 classes; student ``head``, MobileNet ``depthwise`` and extra
    :func:`~archnet.convert.resnet.convert_resnet` keywords (``resnet_options``) as given."""
    rows = []
    shape = (3, input_size, input_size)
    for family in families:
        with torch.device(device):
            teacher, student = _pair(family, shape, head, depthwise, resnet_options)
        t, s = measure(teacher, shape), measure(student, shape)
        rows.append({"model": family, "input": input_size, "head": head,
                     "depthwise": depthwise if family.startswith("mobilenet") else None,
                     **{f"teacher_{k}": v for k, v in asdict(t).items()}, "teacher_macs": t.macs,
                     **{f"student_{k}": v for k, v in asdict(s).items()}, "student_macs": s.macs,
                     "params_ratio": s.params / t.params, "macs_ratio": s.macs / t.macs})
    return rows
