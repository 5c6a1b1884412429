"""The dashboard's presence view: a presence room's users online (id, info, connections),
through the API and in Chromium, where a hostile ``info`` is shown as text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from websockets.asyncio.client import connect

from tests.admin_helpers import ADMIN, OPERATOR, create_app
from tests.support import ThreadServer
from tests.test_admin_browser import pytestmark
from tests.test_admin_charts import _login, watched_page
from tests.ws_helpers import recv_json
from wsplugin import Presence, User

__all__ = ["pytestmark"]

HOSTILE = '<img src=x onerror="window.__pwned=1">'


def from_header(websocket: Any) -> Any:
    name = websocket.headers.get("x-user", "anon")
    return User(name, {"name": HOSTILE if name == "mallory" else name.title()})


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    app = create_app(authenticate=from_header, presence={"chat-*": Presence(grace=0.5)})
    with ThreadServer(app) as running:
        yield running


async def join(server: ThreadServer, user: str, room: str) -> Any:
    ws = await connect(f"{server.ws_url}/ws/{room}", additional_headers={"x-user": user})
    assert (await recv_json(ws))["type"] == "welcome"
    return ws


async def test_the_api_lists_a_presence_rooms_users(server: ThreadServer) -> None:
    sockets = [await join(server, user, "chat-1") for user in ("ann", "ann", "mallory")]
    plain = await join(server, "bob", "lobby")
    async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=5) as http:
        found = (await http.get(f"{ADMIN}/api/rooms/chat-1/presence")).json()
        assert found == {"room": "chat-1", "count": {"users": 2, "connections": 3}, "users": [
            {"id": "ann", "connections": 2, "info": {"name": "Ann"}},
            {"id": "mallory", "connections": 1, "info": {"name": HOSTILE}}]}
        detail = (await http.get(f"{ADMIN}/api/rooms/chat-1")).json()
        assert detail["presence"] is True
        assert (await http.get(f"{ADMIN}/api/rooms/lobby")).json()["presence"] is False
        missing = await http.get(f"{ADMIN}/api/rooms/lobby/presence")
        assert missing.status_code == 404
    for ws in (*sockets, plain):
        await ws.close()


async def test_the_room_view_shows_users_online_as_text(browser: Browser,
                                                        server: ThreadServer) -> None:
    sockets = [await join(server, user, "chat-1") for user in ("ann", "ann", "mallory")]
    context, page, problems = await watched_page(browser, height=1100)
    try:
        page = await _login(page, server)
        await page.click("[data-tab=rooms]")
        await page.locator('#room-table tr[data-room="chat-1"]').click()
        table = page.locator("#room-presence-table tbody")
        await expect(table.locator("tr")).to_have_count(2, timeout=10_000)
        await expect(page.locator("#room-presence-count")).to_have_text(
            "2 users · 3 connections")
        mallory = table.locator("tr").nth(1)
        shown = json.dumps({"name": HOSTILE}, separators=(",", ":"))  # as JSON.stringify
        await expect(mallory.locator("td").nth(1)).to_have_text(shown)
        assert await page.locator("#room-presence img").count() == 0
        assert await page.evaluate("window.__pwned") is None
        assert problems == [], problems
    finally:
        await context.close()
        for ws in sockets:
            await ws.close()
