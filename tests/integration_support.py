"""Shared helpers of the verl / TRL integration tests."""

from __future__ import annotations

import importlib
import os

import pytest

# CI installs the extras and sets this, so that a broken install fails instead of skipping.
REQUIRE_ENV = "FAIRKERNELS_REQUIRE_INTEGRATIONS"


def require(module: str, extra: str):
    """Imports ``module`` or skips the calling test module with the reason (fails under CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not importable: pip install 'fairkernels[{extra}]'")
