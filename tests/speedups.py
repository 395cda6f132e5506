"""The optional C extensions in tests: imported when built, else the tests using them skip.

CI sets PGVEIL_REQUIRE_SPEEDUPS: there a missing extension is an error, not a skip.
"""
from __future__ import annotations

import importlib
import os

import pytest


def c_module(name: str):
    """The built extension ``name``, or None (tests then skip) unless PGVEIL_REQUIRE_SPEEDUPS is set."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("PGVEIL_REQUIRE_SPEEDUPS"):
            raise
        return None


def skip_unless_built(module) -> pytest.MarkDecorator:
    return pytest.mark.skipif(module is None, reason="the C speedups are not built (no compiler at install time)")
