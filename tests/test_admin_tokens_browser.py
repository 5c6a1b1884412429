"""The dashboard's connection table shows when each connection's token expires (Chromium,
real server), and nothing of the token itself."""

from __future__ import annotations

import time

from playwright.async_api import Browser, expect

from tests.admin_helpers import create_app
from tests.jwt_helpers import HS_SECRET, connect_with, connect_with_header, hs_token
from tests.support import ThreadServer
from tests.test_admin_browser import pytestmark, row
from tests.test_admin_charts import _login, watched_page
from wsplugin import JWTAuth

__all__ = ["pytestmark"]  # the fixture and the browser marks, shared


async def test_the_connection_table_shows_each_tokens_expiry(browser: Browser) -> None:
    app = create_app(authenticate=JWTAuth(key=HS_SECRET, algorithms=["HS256"]))
    exp = time.time() + 3600
    expiring = hs_token({"sub": "ann", "exp": exp})
    forever = hs_token({"sub": "bob"})
    with ThreadServer(app) as server:
        ann, welcome = await connect_with_header(server, "lobby", expiring)
        ann_id = welcome["connection_id"]
        bob, welcome = await connect_with(server, "lobby", forever)
        bob_id = welcome["connection_id"]
        context, page, problems = await watched_page(browser)
        try:
            page = await _login(page, server)
            shown = await page.evaluate("(t) => new Date(t * 1000).toLocaleTimeString()", exp)
            await expect(row(page, ann_id).locator("td.expires")).to_have_text(
                shown, timeout=10_000)
            await expect(row(page, bob_id).locator("td.expires")).to_have_text("\u2013")
            await expect(page.locator("#conn-table thead")).to_contain_text("Token expires")
            html = await page.content()
            assert expiring not in html and forever not in html
            assert problems == []
        finally:
            await context.close()
            await ann.close()
            await bob.close()
