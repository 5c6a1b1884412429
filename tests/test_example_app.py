"""The example chat: page and assets served locally, presence, /announce, the chat protocol."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from starlette.testclient import TestClient
from websockets.asyncio.client import ClientConnection, connect

from example_app.main import create_app
from tests.support import ThreadServer, subprocess_server
from tests.test_client_browser import AppProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
URL = re.compile(r"(?:https?|wss?)://", re.IGNORECASE)
LINK = re.compile(r'(?:src|href)="([^"]*)"')


@pytest.fixture(autouse=True)
def memory_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSPLUGIN_BACKEND", raising=False)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(backend="memory://")) as test_client:
        yield test_client


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    with ThreadServer(create_app(backend="memory://")) as running:
        yield running


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv(decode=True))
    return frame


async def next_chat(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next ``message`` frame whose data is of ``kind`` (skipping presence frames)."""
    while True:
        frame = await receive(ws)
        if frame["type"].startswith("presence"):
            continue
        if frame["type"] != "message" or frame["data"].get("kind") == kind:
            return frame


async def next_frame(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others."""
    while (frame := await receive(ws))["type"] != kind:
        pass
    return frame


def entry(name: str, connections: int) -> dict[str, Any]:
    """A user in a presence snapshot of the chat: the name is the id and the info."""
    return {"connections": connections, "info": {"name": name}}


def test_page_links_local_assets_and_admin(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = LINK.findall(page.text)
    assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    assert "/static/chat.js" in assets
    assert "/static/chat.css" in assets
    assert 'import { WSClient } from "/ws-client.js"' in client.get("/static/chat.js").text
    assert 'href="/ws-admin"' in page.text
    assert client.get("/ws-admin").status_code != 404
    for path in assets:
        if path.startswith("/static/"):
            assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("path", ["/", "/static/chat.js", "/static/chat.css", "/ws-client.js"])
def test_no_external_urls(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.text.strip()
    assert URL.findall(response.text) == [], f"{path} refers to another origin"


def test_presence_snapshot_lists_users_from_query(client: TestClient) -> None:
    """The member list: each joiner's snapshot, one entry per name (however many tabs)."""
    with (
        client.websocket_connect("/ws/lobby?name=alice") as alice,
        client.websocket_connect("/ws/lobby?name=alice") as alice_again,
        client.websocket_connect("/ws/lobby") as anonymous,
        client.websocket_connect("/ws/other?name=carol") as carol,
    ):
        assert alice.receive_json()["type"] == "welcome"
        assert alice.receive_json() == {
            "type": "presence", "room": "lobby", "users": {"alice": entry("alice", 1)},
            "count": {"users": 1, "connections": 1}}
        assert alice_again.receive_json()["type"] == "welcome"
        assert alice_again.receive_json()["users"] == {"alice": entry("alice", 2)}
        assert anonymous.receive_json()["type"] == "welcome"
        snapshot = anonymous.receive_json()
        assert snapshot["users"] == {"alice": entry("alice", 2),
                                     "anonymous": entry("anonymous", 1)}
        assert snapshot["count"] == {"users": 2, "connections": 3}
        assert carol.receive_json()["type"] == "welcome"
        assert carol.receive_json()["users"] == {"carol": entry("carol", 1)}


def test_members_http_route_is_gone_and_rooms_are_validated(client: TestClient) -> None:
    assert client.get("/api/rooms/lobby/members").status_code == 404  # presence replaced it
    assert client.post("/announce/bad%20room", json={"text": "x"}).status_code == 422


def test_chat_message_is_stamped_with_name(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby?name=alice") as alice:
        welcome = alice.receive_json()
        alice.send_json({"type": "publish", "data": {"text": " hello "}})
        while (frame := alice.receive_json())["type"] != "message":
            pass
        assert frame["data"] == {"kind": "chat", "name": "alice", "text": "hello"}
        assert frame["sender"] == welcome["connection_id"]
        assert frame["user"] == "alice"
        assert frame["room"] == "lobby"


def test_chat_rejects_non_text(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby?name=alice") as alice:
        alice.receive_json()
        alice.send_json({"type": "publish", "data": [1, 2]})
        while (frame := alice.receive_json())["type"] in ("message", "presence"):
            pass
        assert frame["type"] == "error"
        alice.send_json({"type": "ping", "id": 7})
        while (frame := alice.receive_json())["type"] in ("message", "presence"):
            pass
        assert frame["type"] == "pong"


async def test_announce_reaches_room_members(server: ThreadServer) -> None:
    async with (
        connect(f"{server.ws_url}/ws/news?name=bob") as bob,
        connect(f"{server.ws_url}/ws/elsewhere?name=eve") as eve,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert (await receive(bob))["type"] == "welcome"
        assert (await receive(eve))["type"] == "welcome"
        response = await http.post("/announce/news", json={"text": "release at noon"})
        assert response.status_code == 200
        assert response.json() == {"room": "news", "delivered": 1}
        frame = await next_chat(bob, "announce")
        assert frame == {
            "type": "message",
            "room": "news",
            "data": {"kind": "announce", "name": "server", "text": "release at noon"},
            "sender": None,
        }
        other = await http.post("/announce/elsewhere", json=[1, 2, 3])
        assert other.json() == {"room": "elsewhere", "delivered": 1}
        frame = await next_chat(eve, "announce")
        assert frame["data"] == {"kind": "announce", "name": "server", "data": [1, 2, 3]}


async def test_presence_tells_the_room(server: ThreadServer) -> None:
    async with connect(f"{server.ws_url}/ws/hall?name=ann") as ann:
        assert (await next_frame(ann, "presence"))["users"] == {"ann": entry("ann", 1)}
        async with connect(f"{server.ws_url}/ws/hall?name=ben") as ben:
            snapshot = await next_frame(ben, "presence")
            assert snapshot["users"] == {"ann": entry("ann", 1), "ben": entry("ben", 1)}
            joins: dict[str, Any] = {}
            while "ben" not in joins:  # ann's own join may come first, or with ben's
                diff = await next_frame(ann, "presence_diff")
                assert diff["room"] == "hall" and diff["leaves"] == {}
                joins.update(diff["joins"])
            assert joins == {"ben": {"info": {"name": "ben"}}} or joins == {
                "ann": {"info": {"name": "ann"}}, "ben": {"info": {"name": "ben"}}}
        diff = await next_frame(ann, "presence_diff")  # after the grace
        assert diff == {"type": "presence_diff", "room": "hall", "joins": {},
                        "leaves": {"ben": {}}}


@pytest.mark.timeout(60)
async def test_import_string_runs_under_uvicorn() -> None:
    env = {"WSPLUGIN_BACKEND": "memory://"}
    with subprocess_server("example_app.main:app", env=env) as (_, port):
        async with (
            connect(f"ws://127.0.0.1:{port}/ws/lobby?name=zoe") as zoe,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
        ):
            assert (await receive(zoe))["type"] == "welcome"
            assert (await receive(zoe))["users"] == {"zoe": entry("zoe", 1)}
            assert (await http.get("/static/chat.js")).status_code == 200


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


MEMBERS = "() => [...document.querySelectorAll('#members li')].map((li) => li.innerText)"


async def wait_members(page: Page, expected: list[str]) -> None:
    """Until the member list reads ``expected`` (name, "(you)", device count), in order."""
    await page.wait_for_function(f"(expected) => JSON.stringify(({MEMBERS})()) === "
                                 "JSON.stringify(expected)", arg=expected, timeout=15_000)


async def system_lines(page: Page) -> list[str]:
    lines: list[str] = await page.locator("#messages li.system").all_inner_texts()
    return lines


async def open_chat(browser: Browser, url: str, name: str, errors: list[str]) -> Page:
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url)
    await page.fill("#name", name)
    await page.fill("#room", "lobby")
    await page.click("#join-form button[type=submit]")
    await page.wait_for_selector("#status.online")
    return page


@pytest.mark.browser
@pytest.mark.timeout(60)
async def test_chat_page_in_chromium(server: ThreadServer, browser: Browser) -> None:
    errors: list[str] = []
    alice = await open_chat(browser, server.url, "alice", errors)
    alice_tab = await open_chat(browser, server.url, "alice", errors)  # a second device
    bob = await open_chat(browser, server.url, "<b>bob</b>", errors)
    # One entry per user, with their devices, from the client's synced presence.
    await wait_members(bob, ["<b>bob</b> (you) · 1 device", "alice · 2 devices"])
    # alice's page had bob's join (a diff: no count), then asked for a fresh snapshot.
    await wait_members(alice, ["alice (you) · 2 devices", "<b>bob</b> · 1 device"])
    assert await system_lines(alice) == ["<b>bob</b> joined"]  # her second tab: nothing
    assert await system_lines(bob) == []  # who was there is in the list, not "joined"

    await bob.fill("#text", "hi <img src=x onerror=alert(1)>")
    await bob.press("#text", "Enter")
    line = alice.locator("#messages li.chat")
    await line.wait_for()
    assert await line.inner_text() == "<b>bob</b>hi <img src=x onerror=alert(1)>"
    assert await alice.locator("#messages img").count() == 0

    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/announce/lobby", json={"text": "noon"})
    for page in (alice, bob):
        await page.locator("#messages li.announce", has_text="noon").wait_for()

    await alice_tab.close()  # alice is still online on her first device
    await bob.click("#leave")
    await alice.locator("#messages li.system", has_text="<b>bob</b> left").wait_for(
        timeout=15_000)  # after the grace
    members = await alice.locator("#members li").all_inner_texts()
    assert len(members) == 1 and members[0].startswith("alice (you)")
    assert await system_lines(alice) == ["<b>bob</b> joined", "<b>bob</b> left"]
    assert await alice.locator("#member-count").inner_text() == "1"
    assert errors == []


@pytest.mark.browser
@pytest.mark.timeout(60)
async def test_chat_page_reconnects_after_a_restart(browser: Browser) -> None:
    """The page's wsplugin client reconnects by itself when the server comes back."""
    errors: list[str] = []
    with AppProcess(app="example_app.main:app") as app:
        page = await open_chat(browser, app.url, "rita", errors)
        app.kill()
        await page.locator("#messages li.system", has_text="connection lost [1006]").wait_for()
        await page.wait_for_selector("#status.error")
        app.start()  # the same port
        await page.wait_for_selector("#status.online", timeout=20_000)
        await wait_members(page, ["rita (you) · 1 device"])  # rebuilt by the new process
        await page.fill("#text", "back again")
        await page.press("#text", "Enter")
        await page.locator("#messages li.chat", has_text="back again").wait_for()
        lines = await system_lines(page)
        assert not [line for line in lines if " joined" in line or " left" in line], lines
    # Chromium logs each refused connect on the console; no script error may happen.
    page_errors = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e
                   and "WebSocket connection" not in e]
    assert page_errors == []
