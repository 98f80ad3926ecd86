"""Shared pieces for the search tests: quantization configs, input shape, random paths."""
from __future__ import annotations

import torch

from archnet.ops.quant import QuantConfig, TensorQuantConfig

FLOAT = QuantConfig()
DOREFA = QuantConfig(name="w4a4", weight=TensorQuantConfig("dorefa", 4), act=TensorQuantConfig("fixed", 4))
DOREFA_CHANNEL = QuantConfig(name="w2a4_channel", weight=TensorQuantConfig("dorefa", 2, per_channel=True),
                             act=TensorQuantConfig("fixed", 4))
LSQ = QuantConfig(name="lsq2w4a", weight=TensorQuantConfig("lsq", 2, per_channel=True),
                  act=TensorQuantConfig("lsq", 4))
SHAPE = (3, 32, 32)


def random_paths(sizes: list[int], n: int, seed: int = 0) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(int(torch.randint(0, s, (1,), generator=g)) for s in sizes) for _ in range(n)]
