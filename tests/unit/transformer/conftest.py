"""Fixtures of the transformer-track tests."""
from __future__ import annotations

import pytest
from tiny_transformer import tiny_teacher

from archnet.models.transformer import Transformer


@pytest.fixture
def teacher() -> Transformer:
    return tiny_teacher()
