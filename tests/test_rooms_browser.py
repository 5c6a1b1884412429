"""In Chromium: the AsyncAPI page (``/ws-docs``) shows the channels and schemas with no
console error and no CSP violation; the admin's room view shows what applies to a room.
The page's screenshot is ``docs/asyncapi_docs.png``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, expect
from pydantic import BaseModel
from websockets.asyncio.client import connect

from tests.admin_helpers import ADMIN, OPERATOR, create_app
from tests.support import ThreadServer
from tests.test_admin_browser import OUTPUT, pytestmark
from tests.test_admin_charts import _login, watched_page
from tests.ws_helpers import recv_json
from wsplugin import Connection, History, Presence, RoomOptions, WebSocketManager

__all__ = ["pytestmark"]

SCREENSHOT = OUTPUT / "asyncapi_docs.png"  # docs/asyncapi_docs.png is a copy of it


class ChatIn(BaseModel):
    text: str


class ChatOut(BaseModel):
    text: str
    user: str


class Order(BaseModel):
    id: int
    total: float


def rooms() -> dict[str, RoomOptions]:
    return {
        "chat-*": RoomOptions(client_publish=True, history=History(100, 300),
                              presence=Presence(), publish=ChatIn, message=ChatOut,
                              max_message_bytes=4096, rate_limit=(20, 5.0)),
        "orders-*": RoomOptions(message=Order),
    }


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    app = create_app(rooms=rooms())
    manager: WebSocketManager = app.state.ws_manager

    @manager.on_publish("dm-*")
    async def dm(conn: Connection, room: str, msg: ChatIn) -> ChatOut | None:
        return None

    assert isinstance(app, FastAPI)
    with ThreadServer(app) as running:
        yield running


async def test_the_docs_page_shows_channels_and_schemas(browser: Browser,
                                                         server: ThreadServer) -> None:
    context, page, problems = await watched_page(browser, height=1000)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    try:
        await page.goto(f"{server.url}/ws-docs")
        patterns = page.locator("#channels .pattern")
        await expect(patterns).to_have_text(["chat-*", "orders-*", "dm-*", "*"])
        chat = page.locator("#channel-1")
        await expect(chat.locator(".typed h4")).to_have_text(
            ["publish (data: ChatIn)", "message (data: ChatOut)"])
        await expect(chat.locator(".options")).to_contain_text("max_message_bytes")
        await expect(chat.locator(".typed pre.schema").first).to_contain_text('"title": "ChatIn"')
        await expect(page.locator("#server-url")).to_have_text(
            f"ws://127.0.0.1:{server.port}/ws/{{room}}")
        await expect(page.locator("#messages article")).to_have_count(20)
        await expect(page.locator("#schemas article h3")).to_contain_text(["ChatIn", "ChatOut"])
        style = await page.evaluate(  # the package's stylesheet was applied
            "getComputedStyle(document.querySelector('pre')).borderRadius")
        assert style == "6px"
        OUTPUT.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
        assert await page.evaluate("window.__csp") == []
        assert problems == [], problems
        assert failed == [], failed
    finally:
        await context.close()


async def join(server: ThreadServer, room: str) -> Any:
    ws = await connect(f"{server.ws_url}/ws/{room}")
    assert (await recv_json(ws))["type"] == "welcome"
    return ws


async def test_the_room_view_shows_the_room_options(browser: Browser,
                                                    server: ThreadServer) -> None:
    sockets = [await join(server, "chat-1"), await join(server, "lobby")]
    async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=5) as http:
        detail = (await http.get(f"{ADMIN}/api/rooms/chat-1")).json()
        assert detail["options"] == {
            "client_publish": True, "history": {"size": 100, "ttl": 300, "meta_ttl": 2592000},
            "presence": {"join_leave": True, "grace": 5.0, "max_list": 1000},
            "publish": "ChatIn", "message": "ChatOut", "max_message_bytes": 4096,
            "rate_limit": [20, 5.0], "authorize": None, "on_publish": None}
        lobby = (await http.get(f"{ADMIN}/api/rooms/lobby")).json()
        assert lobby["options"]["client_publish"] is False
    context, page, problems = await watched_page(browser, height=1100)
    try:
        page = await _login(page, server)
        await page.click("[data-tab=rooms]")
        await page.locator('#room-table tr[data-room="chat-1"]').click()
        options = page.locator("#room-options")
        await expect(options).to_contain_text("Options: client_publish · history:")
        await expect(options).to_contain_text('publish: "ChatIn" · message: "ChatOut"')
        await expect(options).to_contain_text("rate_limit: [20,5]")
        await page.locator('#room-table tr[data-room="lobby"]').click()
        await expect(options).to_have_text("Options: the global defaults")
        assert await page.evaluate("window.__csp") == []
        assert problems == [], problems
    finally:
        await context.close()
        for ws in sockets:
            await ws.close()
