"""Fixtures of the search tests: a tiny teacher with random weights."""
from __future__ import annotations

import pytest
import torch

from archnet.models.resnet import tiny_resnet


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_resnet().eval()
