"""Fixtures for the data tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from awkward_images import make_awkward_folder


@pytest.fixture
def awkward_folder(tmp_path: Path) -> Path:
    return make_awkward_folder(tmp_path / "data")
