"""Shared helpers for the adagrad_cpu tests."""

from __future__ import annotations

import os

import pytest

import adagrad_cpu


def isas() -> list[str]:
    """Every kernel path this CPU has; a path named in ADAGRAD_REQUIRE_ISA that is missing fails the run."""
    have = adagrad_cpu.available_isas()
    required = [r for r in os.environ.get("ADAGRAD_REQUIRE_ISA", "").split(",") if r]
    missing = [r for r in required if r not in have]
    if missing:
        raise RuntimeError(f"ADAGRAD_REQUIRE_ISA names {missing}, which this CPU lacks (it has {have})")
    return have


@pytest.fixture(params=isas())
def isa(request: pytest.FixtureRequest) -> str:
    """Each kernel path in turn."""
    return request.param
