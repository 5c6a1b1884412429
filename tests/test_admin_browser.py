"""The dashboard in a real browser (Debian's Chromium driven by Playwright) on a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Dialog, Page, expect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from admin_ui.auth import token_name
from tests.admin_helpers import (
    ADMIN,
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    XSS,
    create_app,
    identity_from_query,
    next_message,
    open_client,
)
from tests.chromium import MARKS
from tests.support import ROOT, ThreadServer

OUTPUT = Path(ROOT) / "tests" / "output"
SCREENSHOT = OUTPUT / "admin_dashboard.png"

pytestmark = MARKS


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    app = create_app(authenticate=identity_from_query, client_publish=True)
    with ThreadServer(app) as running:
        yield running




async def logged_in_page(browser: Browser, server: ThreadServer) -> Page:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(f"{server.url}{ADMIN}/")
    await expect(page).to_have_url(f"{server.url}{ADMIN}/login")
    await page.fill("input[name=token]", OPERATOR_TOKEN)
    await page.click("form:has(input[name=token]) button[type=submit]")
    await expect(page).to_have_url(f"{server.url}{ADMIN}/")
    await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    return page


def row(page: Page, conn_id: str) -> Any:
    return page.locator(f'#conn-table tbody tr[data-id="{conn_id}"]')


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def crowd(server: ThreadServer) -> list[ClientConnection]:
    """A few more clients in a few rooms, with some traffic, so the screenshot shows life."""
    people = [("ada", "lobby"), ("grace", "lobby"), ("linus", "dev"), ("guido", "dev"),
              ("margaret", "ops")]
    clients = []
    for name, room in people:
        ws, _ = await open_client(server.ws_url, f"{room}?user={name}",
                                  user_agent_header="Mozilla/5.0 (X11; Linux x86_64)")
        clients.append(ws)
    for ws in clients:
        await ws.send(json.dumps({"type": "publish", "data": {"text": "hi"}}))
    return clients


async def test_login_live_rows_broadcast_and_kick(browser: Browser, server: ThreadServer) -> None:
    page = await logged_in_page(browser, server)
    others = await crowd(server)
    ws, conn_id = await open_client(server.ws_url, "lobby?user=mallory")
    try:
        # The row appears without a reload.
        await expect(row(page, conn_id)).to_be_visible(timeout=10_000)
        await expect(row(page, conn_id)).to_contain_text("mallory")
        await expect(page.locator('[data-total="connections"]')).to_have_text("6")

        # Broadcast to the room from the Rooms tab; the client receives it.
        await page.click('[data-tab="rooms"]')
        await expect(page.locator('#room-table tbody tr[data-room="lobby"]')).to_contain_text("3")
        await page.fill("#broadcast-room", "lobby")
        await page.fill("#broadcast-data", '{"notice": "maintenance at noon"}')
        await page.click("#broadcast-form button[type=submit]")
        message = await asyncio.wait_for(next_message(ws), 10)
        assert message["data"] == {"notice": "maintenance at noon"}
        assert message["room"] == "lobby"
        await expect(page.locator("#flash")).to_contain_text("Delivered to 3")
        await page.click('#room-table tbody tr[data-room="lobby"]')
        await expect(page.locator("#room-members tbody tr")).to_have_count(3)

        # Kick it: the confirm dialog is accepted, the client gets 4000 and the reason.
        await page.click('[data-tab="connections"]')
        await row(page, conn_id).click()
        await expect(page.locator("#selected-id")).to_have_text(conn_id)
        await page.fill("#kick-reason", "spamming the lobby")
        dialogs: list[str] = []

        async def accept(dialog: Dialog) -> None:
            dialogs.append(dialog.type)
            await dialog.accept()

        page.once("dialog", accept)
        await page.click("#kick-button")
        assert await closed_with(ws) == (4000, "spamming the lobby")
        assert dialogs == ["confirm"]
        await expect(row(page, conn_id)).to_have_count(0, timeout=10_000)
        await expect(page.locator("#selected-panel")).to_be_hidden()

        # The event log and the audit log show it, live.
        await page.click('[data-tab="events"]')
        await expect(page.locator("#event-table tbody tr.kind-kicked")).to_contain_text(
            "spamming the lobby"
        )
        await page.click('[data-tab="audit"]')
        audit = page.locator("#audit-table tbody tr")
        await expect(audit.first).to_contain_text("kick")
        await expect(audit.first).to_contain_text(conn_id)
        await page.click('[data-tab="connections"]')
        await expect(page.locator('[data-total="connections"]')).to_have_text("5")
        OUTPUT.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 10_000  # docs/admin_dashboard.png is a copy of it
    finally:
        for other in others:
            await other.close()
        await ws.close()
        await page.close()


async def test_hostile_strings_render_as_text(browser: Browser, server: ThreadServer) -> None:
    page = await logged_in_page(browser, server)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.type))
    ws, conn_id = await open_client(
        server.ws_url, f"lobby?user={quote(XSS)}", user_agent_header=XSS
    )
    try:
        line = row(page, conn_id)
        await expect(line).to_be_visible(timeout=10_000)
        cells = line.locator("td")
        await expect(cells.nth(1)).to_have_text(XSS)  # identity
        await expect(cells.nth(2)).to_have_text(XSS)  # user (the str identity is its id)
        await expect(cells.nth(5)).to_have_text(XSS)  # user agent
        assert await page.locator("#conn-table img").count() == 0
        await page.click('[data-tab="events"]')
        await expect(page.locator("#event-table tbody tr").first).to_contain_text(XSS)
        assert await page.locator("img").count() == 0
        await page.wait_for_timeout(500)  # give a would-be onerror handler time to fire
        assert dialogs == []
    finally:
        await ws.close()
        await page.close()


async def test_viewer_sees_no_action_controls(browser: Browser, server: ThreadServer) -> None:
    page = await browser.new_page()
    try:
        await page.goto(f"{server.url}{ADMIN}/login#token={VIEWER_TOKEN}")
        await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
        await expect(page.locator("#broadcast-form")).to_be_hidden()
        await expect(page.locator("#selected-panel")).to_be_hidden()
    finally:
        await page.close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_fragment_link_logs_in_without_the_token_in_any_url(browser: Browser) -> None:
    with ThreadServer(create_app(), log_level="info", access_log=True) as logged:
        access = Lines()
        logging.getLogger("uvicorn.access").addHandler(access)
        page = await browser.new_page()
        seen: list[str] = []
        page.on("request", lambda request: seen.append(request.url))
        try:
            await page.goto(f"{logged.url}{ADMIN}/login#token={OPERATOR_TOKEN}")
            await expect(page).to_have_url(f"{logged.url}{ADMIN}/")
            await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            who = f"{token_name(OPERATOR_TOKEN)} · operator"
            await expect(page.locator(".who")).to_have_text(who)

            await page.goto(f"{logged.url}{ADMIN}/login?token=pasted-into-the-query")
            await expect(page.locator("p.error")).to_contain_text("query string")
            await expect(page).to_have_url(re.compile(r"/login\?token="))
        finally:
            logging.getLogger("uvicorn.access").removeHandler(access)
            await page.close()
    assert any("POST /ws-admin/login" in line for line in access.lines), access.lines
    assert any("GET /ws-admin/ " in line for line in access.lines), access.lines
    assert seen and not [url for url in seen if OPERATOR_TOKEN in url]
    assert not [line for line in access.lines if OPERATOR_TOKEN in line]
