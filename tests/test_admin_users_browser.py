"""Users on the dashboard in Chromium, on a real server: the user column (id and info, as
text however hostile), the user filter, and "kick user" (confirmed, every connection of the
user, audited); the console and the Content-Security-Policy stay clean."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Dialog, Page, expect

from tests.admin_helpers import XSS, create_app, open_client
from tests.support import ThreadServer
from tests.test_admin_browser import closed_with, pytestmark, row
from tests.test_admin_charts import _login, watched_page
from tests.test_admin_users import authenticate

__all__ = ["pytestmark"]  # the fixture and the browser marks, shared

HOSTILE_INFO = {"name": XSS, "avatar": "javascript:alert(2)", "bio": "</td><script>alert(3)"
                "</script>"}


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    with ThreadServer(create_app(authenticate=authenticate)) as running:
        yield running


def accept_dialogs(page: Page) -> list[str]:
    """Accept every dialog (the kick confirmations); their types and messages, in order."""
    seen: list[str] = []

    async def accept(dialog: Dialog) -> None:
        seen.append(f"{dialog.type}: {dialog.message}")
        await dialog.accept()

    page.on("dialog", accept)
    return seen


async def filter_user(page: Page, user: str) -> None:
    await page.fill("#conn-user", user)


async def test_user_column_filter_and_kick_user(browser: Browser, server: ThreadServer) -> None:
    context, page, problems = await watched_page(browser)
    dialogs = accept_dialogs(page)
    alice = [await open_client(server.ws_url, f"{room}?user=alice&name=Alice")
             for room in ("red", "blue")]
    bob, bob_id = await open_client(server.ws_url, "red?user=bob")
    guest, guest_id = await open_client(server.ws_url, "red")
    try:
        page = await _login(page, server)
        for _, conn_id in alice:
            cell = row(page, conn_id).locator("td.user")
            await expect(cell).to_have_text('alice{"name":"Alice"}', timeout=10_000)
            await expect(cell.locator(".info")).to_have_text('{"name":"Alice"}')
        await expect(row(page, bob_id).locator("td.user")).to_have_text('bob{"name":"Bob"}')

        await filter_user(page, "alice")  # only alice's rows, served by ?user=alice
        await expect(page.locator("#conn-table tbody tr")).to_have_count(2)
        await expect(row(page, bob_id)).to_have_count(0)
        await filter_user(page, "")
        await expect(row(page, bob_id)).to_have_count(1)

        await row(page, alice[0][1]).click()
        await expect(page.locator("#selected-user")).to_have_text("alice")
        await expect(page.locator("#selected-user-actions")).to_be_visible()
        await page.fill("#kick-reason", "account closed")
        await page.click("#kick-user-button")
        for ws, _ in alice:
            assert await closed_with(ws) == (4000, "account closed")
        await expect(page.locator("#flash")).to_have_text("Kicked 2 connection(s) of user alice")
        assert len(dialogs) == 1 and dialogs[0].startswith("confirm: Kick user alice")
        await expect(row(page, alice[0][1])).to_have_count(0, timeout=10_000)
        await expect(row(page, bob_id)).to_have_count(1)

        await row(page, guest_id).click()  # a connection without a user: no "kick user"
        await expect(page.locator("#selected-id")).to_have_text(guest_id)
        await expect(page.locator("#selected-user-actions")).to_be_hidden()
        await expect(row(page, guest_id).locator("td.user")).to_have_text("")
        await page.click('[data-tab="audit"]')
        entry = page.locator("#audit-table tbody tr").first
        await expect(entry).to_contain_text("kick_user")
        await expect(entry).to_contain_text("account closed")
        await expect(entry).to_contain_text("kicked 2")
        assert problems == []
    finally:
        await bob.close()
        await guest.close()
        await context.close()


async def test_a_hostile_user_id_and_info_render_as_text(
    browser: Browser, server: ThreadServer
) -> None:
    context, page, problems = await watched_page(browser)
    dialogs = accept_dialogs(page)
    info = quote(json.dumps(HOSTILE_INFO))
    ws, conn_id = await open_client(server.ws_url, f"lobby?user={quote(XSS)}&info={info}")
    shown = json.dumps(HOSTILE_INFO, separators=(",", ":"))  # what JSON.stringify makes
    try:
        page = await _login(page, server)
        await filter_user(page, XSS)  # the filter takes the hostile id as it is
        line = row(page, conn_id)
        await expect(line).to_be_visible(timeout=10_000)
        cell = line.locator("td.user")
        await expect(cell).to_have_text(XSS + shown)
        assert await cell.get_attribute("title") == shown
        assert await page.locator("#conn-table img").count() == 0
        assert await page.locator("#conn-table script").count() == 0

        await line.click()
        await expect(page.locator("#selected-user")).to_have_text(XSS)
        await page.click("#kick-user-button")
        assert await closed_with(ws) == (4000, "kicked by an operator")
        await expect(page.locator("#flash")).to_have_text(
            f"Kicked 1 connection(s) of user {XSS}")
        await page.wait_for_timeout(500)  # give a would-be onerror handler time to fire
        assert [d.split(":")[0] for d in dialogs] == ["confirm"]  # ours, and no alert
        assert await page.locator("img").count() == 0
        assert problems == []
    finally:
        await ws.close()
        await context.close()

