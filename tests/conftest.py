from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.browser", "tests.support.redis_server"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
