from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytest_plugins = ["tests.redis_server"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium for this test (see ``tests/chromium.py``)."""
    from tests.chromium import launched

    async with launched() as running:
        yield running
