"""A missing test service: skipped on a developer's machine, a failure under CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def _in_ci() -> bool:
    """True when ``CI`` is set to true (or 1, or yes), as CI services do."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip the test for want of a service; under CI, fail it: CI must provide it."""
    if _in_ci():
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(reason)
