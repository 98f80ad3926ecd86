"""Demo-like students for the deploy tests: ``convert_resnet(tiny_resnet())`` at 32x32 with BN
statistics calibrated on random images (a random teacher's copied BN statistics would
silence every quantized activation) and a wider random classifier so that top-1 varies."""
from __future__ import annotations

import torch
from torch import nn

from archnet.convert.resnet import convert_resnet
from archnet.models.resnet import tiny_resnet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

INPUT = (3, 32, 32)


def quant(w: str = "dorefa", wb: int = 2, a: str = "fixed", ab: int = 4, head_bits: int = 8) -> QuantConfig:
    return QuantConfig(f"w{wb}a{ab}", TensorQuantConfig(w, wb), TensorQuantConfig(a, ab),
                       head_weight_bits=head_bits, logit_clip=16.0)


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: int = 4, batch_size: int = 64, seed: int = 1) -> None:
    """Exact BN statistics (cumulative average) from a few train-mode forwards on random data;
    this is also the first training forward that initialises LSQ steps."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for _ in range(batches):
        model(torch.randn(batch_size, *INPUT, generator=g))
    model.eval()


def build_student(q: QuantConfig | None = None, head: str = "flatten", seed: int = 0,
                  **rules: object) -> nn.Module:
    """``rules``: further :func:`convert_resnet` keywords (e.g. ``fold_add=True``)."""
    torch.manual_seed(seed)
    student = convert_resnet(tiny_resnet(), quant=q, input_shape=INPUT, head=head, **rules)
    nn.init.normal_(student.head.fc.weight, std=0.3)
    calibrate_bn(student)
    return student


def images(n: int, seed: int = 123) -> torch.Tensor:
    return torch.randn(n, *INPUT, generator=torch.Generator().manual_seed(seed))
