"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by
Playwright (``playwright install`` cannot download browsers here). The ``browser`` fixture
(``tests/conftest.py``) launches one per test; mark a module with :data:`MARKS`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

MARKS = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="needs /usr/bin/chromium (apt-get install chromium); required when CI is set",
    ),
]
"""A browser test module's ``pytestmark``: it is skipped without Chromium, unless in CI."""


@contextlib.asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
