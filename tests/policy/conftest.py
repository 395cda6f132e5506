"""Shared helpers for the policy tests: paths to ../shared, config building."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
EXAMPLE = SHARED / "docs" / "pgveil.example.yaml"


@pytest.fixture
def example_path() -> Path:
    if not EXAMPLE.is_file():
        pytest.skip(f"example config not found at {EXAMPLE}")
    return EXAMPLE
