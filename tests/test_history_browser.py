"""The dashboard shows a history room's position and newest messages (real Chromium)."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests import test_admin_browser as admin_browser
from tests.admin_helpers import create_app, identity_from_query, manager_of, open_client
from tests.chromium import MARKS
from tests.support import ThreadServer
from tests.test_history import HISTORY
from tests.ws_helpers import on_server

pytestmark = MARKS




async def test_room_detail_shows_history(browser: Browser) -> None:
    app = create_app(authenticate=identity_from_query, history=HISTORY)
    manager = manager_of(app)
    with ThreadServer(app) as server:
        ws, _ = await open_client(server.ws_url, "h-shown?user=ann")
        for value in ("one", {"n": 2}, "three"):
            await on_server(server, manager.broadcast("h-shown", value))
        page = await admin_browser.logged_in_page(browser, server)
        await page.click('[data-tab="rooms"]')
        await page.click('#room-table tbody tr[data-room="h-shown"]')
        await expect(page.locator("#room-history")).to_be_visible()
        await expect(page.locator("#room-history-position")).to_contain_text("offset 3")
        rows = page.locator("#room-history-table tbody tr")
        await expect(rows).to_have_count(3)
        await expect(rows.first).to_contain_text('"three"')
        await ws.close()
