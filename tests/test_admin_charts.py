"""The dashboard's live charts (``admin_ui/static/charts.js``) in Chromium, on a real server.

Traffic flows; the charts must draw, move, show the rates, with no console error and no
Content-Security-Policy violation. The screenshot is ``docs/admin_charts.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect
from websockets.asyncio.client import ClientConnection

from tests.admin_helpers import ADMIN, OPERATOR_TOKEN, create_app, identity_from_query, open_client
from tests.support import ThreadServer
from tests.test_admin_browser import OUTPUT, pytestmark

__all__ = ["pytestmark"]  # the fixture and the browser marks, shared

SCREENSHOT = OUTPUT / "admin_charts.png"  # docs/admin_charts.png is a copy of it

CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    # client_publish: the traffic's publishes reach the room (off by default: "forbidden")
    with ThreadServer(create_app(authenticate=identity_from_query,
                                 client_publish=True)) as running:
        yield running


@contextlib.asynccontextmanager
async def traffic(server: ThreadServer, clients: int = 6) -> AsyncIterator[list[ClientConnection]]:
    """``clients`` connections in two rooms; one publishes ~40 messages a second."""
    people = [await open_client(server.ws_url, f"{'lobby' if i % 2 else 'dev'}?user=u{i}")
              for i in range(clients)]
    sockets = [ws for ws, _ in people]

    async def publish() -> None:
        seq = 0
        while True:
            await sockets[0].send(json.dumps({"type": "publish", "data": {"seq": seq}}))
            seq += 1
            await asyncio.sleep(0.025)

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    tasks = [asyncio.create_task(publish()), *(asyncio.create_task(drain(ws)) for ws in sockets)]
    try:
        yield sockets
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ws in sockets:
            await ws.close()


async def series(page: Page, chart: str, key: str) -> str:
    points = await page.locator(f'#chart-{chart} polyline[data-series="{key}"]').get_attribute(
        "points")
    return points or ""


async def watched_page(
    browser: Browser, height: int = 900,
) -> tuple[BrowserContext, Page, list[str]]:
    """A page with the CSP probe whose console errors/warnings and page errors are listed."""
    problems: list[str] = []
    context = await browser.new_context(viewport={"width": 1440, "height": height})
    await context.add_init_script(CSP_PROBE)
    page = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.location.get("url", "").endswith("/favicon.ico"):
            return  # the browser's own request at the app's root, not the dashboard's
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text} {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return context, page, problems


async def test_charts_draw_and_move_with_traffic(browser: Browser, server: ThreadServer) -> None:
    context, page, problems = await watched_page(browser)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page = await _login(page, server)
        for chart in ("connections", "messages", "drops"):
            await expect(page.locator(f"#chart-{chart} polyline").first).to_be_attached()
        async with traffic(server):
            legend = page.locator("#chart-connections .chart-legend")
            await expect(legend).to_contain_text("total 6", timeout=10_000)
            out_legend = page.locator("#chart-messages .key.s-out")
            await expect(out_legend).not_to_have_text("out/s 0", timeout=10_000)
            first = await series(page, "messages", "out")
            await page.wait_for_timeout(2200)
            second = await series(page, "messages", "out")
            assert first != second, "the messages chart did not move"
            assert len(second.split()) >= len(first.split()) + 2
            rate = float((await out_legend.text_content() or "").split()[-1].replace(",", ""))
            assert rate > 20, f"messages out/s shown as {rate}"
            OUTPUT.mkdir(parents=True, exist_ok=True)
            await page.wait_for_timeout(6000)  # more history in the picture
            await page.screenshot(path=str(SCREENSHOT), full_page=False)
        assert SCREENSHOT.stat().st_size > 10_000
        await expect(legend).to_contain_text("total 0", timeout=10_000)  # everyone left
        csp: Any = await page.evaluate("window.__csp")
        assert csp == [], f"CSP violations: {csp}"
        assert problems == [], (problems, failed)
    finally:
        await context.close()


async def _login(page: Page, server: ThreadServer) -> Page:
    """``logged_in_page()`` on a page whose init script and listeners are attached."""
    await page.goto(f"{server.url}{ADMIN}/")
    await page.fill("input[name=token]", OPERATOR_TOKEN)
    await page.click("form:has(input[name=token]) button[type=submit]")
    await expect(page).to_have_url(f"{server.url}{ADMIN}/")
    await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    return page

