"""The browser client's connection tokens (``getToken``), in real Chromium against a uvicorn
subprocess whose endpoint takes HS256 JWTs (``tests.token_app``): the token goes in the
``connect`` frame, is refreshed in-band before it expires (same connection), a failed or
refused refresh is retried, an expired token (4001) reconnects once with a new one and history
rooms recover what was missed, a second 4001 in a row and a 4003 are terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from tests.chromium import MARKS
from tests.test_client_browser import AppProcess

pytestmark = MARKS
APP = "tests.token_app:app"
GRACE = 1.0  # the server's refresh_grace, seconds
EVENTS = ["connected", "disconnected", "message", "joined", "left", "recovered", "reset",
          "refreshed", "error", "closed"]

# The page's getToken asks the app's POST /token for a token with the claims in
# window.mint. window.mode says what it gives instead: "fresh" (a new token), "stale" (the
# last one again), "fail" (it throws), "other" (a token of user bob), "bad" (a bad signature);
# window.next queues one-off modes. window.on4001 is the mode taken after a close 4001, and
# it holds the next getToken until the test calls window.release(). Everything is logged.
START = """({url, options, events, setup}) => {
  const log = window.log = [];
  Object.assign(window, {mode: "fresh", next: [], mint: {sub: "ann", ttl: 3}, on4001: null},
                setup);
  let last = null;
  const mint = async (claims) => {
    const init = {method: "POST", headers: {"content-type": "application/json"},
                  body: JSON.stringify(claims)};
    return (await (await fetch("/token", init)).json()).token;
  };
  options.getToken = async () => {
    const mode = window.next.length ? window.next.shift() : window.mode;
    log.push({event: "getToken", mode});
    await window.held;
    if (mode === "fail") throw new Error("the login service is down");
    if (mode === "stale" && last) return last;
    if (mode === "other") return mint({...window.mint, sub: "bob"});
    if (mode === "bad") return mint({...window.mint, bad: true});
    return (last = await mint(window.mint));
  };
  const client = window.client = new window.wsplugin.WSClient(url, options);
  for (const name of events) client.on(name, (d) => log.push({event: name, ...d}));
  client.on("disconnected", ({code}) => {
    if (code !== 4001 || !window.on4001) return;
    window.mode = window.on4001;
    window.held = new Promise((resolve) => { window.release = resolve; });
  });
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[AppProcess]:
    with AppProcess({"WSPLUGIN_REFRESH_GRACE": str(GRACE)}, app=APP) as running:
        yield running




class Pages:
    """The test's pages; every console error and uncaught exception is collected."""

    def __init__(self, browser: Browser, app: AppProcess) -> None:
        self.browser = browser
        self.app = app
        self.errors: list[str] = []

    async def open(self, url: str, setup: dict[str, Any] | None = None,
                   **options: Any) -> Page:
        """A page whose client connects to ``url``; ``setup`` sets the page's ``mint``,
        ``mode``, ``next`` before the client's first getToken."""
        page = await self.browser.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{self.app.url}/page")
        await page.wait_for_function("window.ready === true")
        options = {"backoffMin": 100, "backoffMax": 500, **options}
        await page.evaluate(START, {"url": url, "options": options, "events": EVENTS,
                                    "setup": setup or {}})
        return page


@pytest.fixture
async def pages(browser: Browser, server: AppProcess) -> AsyncIterator[Pages]:
    opened = Pages(browser, server)
    yield opened
    assert opened.errors == []


async def log(page: Page, *kinds: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await page.evaluate("window.log")
    return [e for e in entries if not kinds or e["event"] in kinds]


async def wait_for(page: Page, event: str, count: int = 1,
                   **fields: Any) -> list[dict[str, Any]]:
    """Until ``count`` events of this kind (with these field values) were logged."""
    await page.wait_for_function(
        """([event, count, fields]) => window.log.filter((e) => e.event === event &&
             Object.entries(fields).every(([k, v]) => e[k] === v)).length >= count""",
        arg=[event, count, fields], timeout=15_000,
    )
    return [e for e in await log(page, event) if all(e.get(k) == v for k, v in fields.items())]


async def server_connections(app: AppProcess) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=app.url) as http:
        found: list[dict[str, Any]] = (await http.get("/connections")).json()
        return found


async def publish(app: AppProcess, room: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=app.url) as http:
        assert (await http.post(f"/publish/{room}", json={"n": n})).json() == {"ok": True}


def messages(entries: list[dict[str, Any]], room: str) -> list[tuple[int, int]]:
    return [(e["offset"], e["data"]["n"]) for e in entries
            if e["event"] == "message" and e["room"] == room]


async def test_the_token_is_refreshed_in_band_on_the_same_connection(
    pages: Pages, server: AppProcess
) -> None:
    page = await pages.open("/ws/h-live")
    [connected] = await wait_for(page, "connected")
    assert 0 < connected["expiresIn"] <= 3  # whole seconds left of a 3 s token
    await wait_for(page, "refreshed", 3)
    entries = await log(page, "getToken", "connected", "refreshed", "disconnected")
    third = [i for i, e in enumerate(entries) if e["event"] == "refreshed"][2]
    # getToken before the connect and before each refresh; one connection all along.
    assert [e["event"] for e in entries[:third + 1]] == [
        "getToken", "connected", "getToken", "refreshed", "getToken", "refreshed",
        "getToken", "refreshed"]
    assert all(0 < e["expiresIn"] <= 3 for e in entries[:third + 1]
               if e["event"] == "refreshed")
    assert await log(page, "disconnected", "error") == []
    # Past the first token's exp + refresh_grace: the server still has that one connection.
    [conn] = await server_connections(server)
    assert conn["id"] == connected["connectionId"] == await page.evaluate("client.connectionId")
    assert await page.evaluate("client.state") == "open"
    await publish(server, "h-live", 1)
    await wait_for(page, "message")
    await page.evaluate("client.close()")


async def test_a_refused_refresh_is_retried_and_a_withdrawn_room_is_left(
    pages: Pages, server: AppProcess
) -> None:
    # 6 s tokens: the retry comes well before the token expires, even on a busy machine.
    wide = {"sub": "ann", "ttl": 6, "rooms": ["lobby-*", "side-*"]}
    page = await pages.open("/ws/lobby-1", {"mint": wide}, rooms=["side-1"])
    await wait_for(page, "joined", room="side-1")
    [connected] = await log(page, "connected")
    # The next refresh gets bob's token (refused: forbidden), the retry ann's, which no
    # longer allows side-*: the server takes the client out of side-1, then `refreshed`.
    await page.evaluate("""() => { window.next.push("other");
        window.mint = {sub: "ann", ttl: 6, rooms: ["lobby-*"]}; }""")
    [refused] = await wait_for(page, "error", code="forbidden")
    assert refused["refresh"] is True
    [left] = await wait_for(page, "left", room="side-1")
    assert left["reason"] == "forbidden"
    await wait_for(page, "refreshed")
    modes = [e["mode"] for e in await log(page, "getToken")]
    assert modes[:3] == ["fresh", "other", "fresh"]
    assert await page.evaluate("client.rooms") == ["lobby-1"]
    assert await page.evaluate("client.connectionId") == connected["connectionId"]
    assert await log(page, "disconnected") == []
    [conn] = [c for c in await server_connections(server)
              if c["id"] == connected["connectionId"]]
    assert conn["rooms"] == ["lobby-1"]
    await page.evaluate("client.close()")


async def test_an_expired_token_reconnects_with_a_new_one_and_history_recovers(
    pages: Pages, server: AppProcess
) -> None:
    page = await pages.open("/ws/h-exp", rooms=["h-side"])
    await wait_for(page, "joined", room="h-side")
    [first] = await log(page, "connected")
    for n in (1, 2):
        for room in ("h-exp", "h-side"):
            await publish(server, room, n)
    await wait_for(page, "message", 4)
    # getToken now gives the same token again: it expires, the server closes 4001.
    await page.evaluate("() => { window.mode = 'stale'; window.on4001 = 'fresh'; }")
    [expired] = await wait_for(page, "disconnected", code=4001)
    assert expired["reason"] == "token expired"
    assert (expired["reconnect"], expired["wasConnected"]) == (True, True)
    for n in (3, 4):  # missed: the client waits for its new token
        for room in ("h-exp", "h-side"):
            await publish(server, room, n)
    await page.evaluate("window.release()")
    [_, again] = await wait_for(page, "connected", 2)
    assert again["reconnected"] is True and again["connectionId"] != first["connectionId"]
    for room in ("h-exp", "h-side"):
        [recovered] = await wait_for(page, "recovered", room=room)
        assert recovered["recovered"] is True and recovered["offset"] == 4
    for room in ("h-exp", "h-side"):
        await publish(server, room, 5)
    await wait_for(page, "message", 10)
    entries = await log(page)
    for room in ("h-exp", "h-side"):
        assert messages(entries, room) == [(n, n) for n in range(1, 6)]  # once, in order
    assert await log(page, "reset", "closed") == []
    assert len(await log(page, "disconnected")) == 1
    modes = [e["mode"] for e in await log(page, "getToken")]
    assert modes[0] == "fresh" and "stale" in modes and modes[-1] == "fresh"
    await page.evaluate("client.close()")


async def test_a_second_4001_in_a_row_is_terminal(pages: Pages, server: AppProcess) -> None:
    page = await pages.open("/ws/lobby-t")
    await wait_for(page, "connected")
    # getToken starts failing: the refresh is retried until the token expires, then 4001;
    # the token of the reconnect does not verify: a second 4001, and the client gives up.
    await page.evaluate("() => { window.mode = 'fail'; window.on4001 = 'bad'; }")
    [failed, *_] = await wait_for(page, "error", code="get_token")
    assert failed["refresh"] is True
    [expired] = await wait_for(page, "disconnected", code=4001, reason="token expired")
    assert expired["reconnect"] is True
    await page.evaluate("window.release()")
    [closed] = await wait_for(page, "closed")
    assert (closed["code"], closed["reason"]) == (4001, "bad signature")
    [_, last] = await log(page, "disconnected")
    assert (last["code"], last["reconnect"], last["wasConnected"]) == (4001, False, False)
    assert len(await log(page, "connected")) == 1
    assert await page.evaluate("client.state") == "closed"
    assert [e["mode"] for e in await log(page, "getToken")][-1] == "bad"


async def test_a_failing_getToken_is_retried_and_4003_is_terminal(
    pages: Pages, server: AppProcess
) -> None:
    # getToken fails before a connect: retried with the backoff, like a failed connect.
    page = await pages.open("/ws/lobby-f", {"next": ["fail", "fail"]})
    await wait_for(page, "connected")
    failures = await log(page, "disconnected")
    assert [(e["code"], e["reason"], e["reconnect"], e["wasConnected"]) for e in failures] == [
        (1006, "getToken failed", True, False)] * 2
    assert [e["mode"] for e in await log(page, "getToken")] == ["fail", "fail", "fresh"]
    await page.evaluate("client.close()")
    # A token whose rooms do not allow the URL room: 4003, terminal; getToken asked once.
    narrow = {"sub": "ann", "ttl": 3, "rooms": ["lobby-*"]}
    other = await pages.open("/ws/h-no", {"mint": narrow})
    [closed] = await wait_for(other, "closed")
    assert (closed["code"], closed["reason"]) == (4003, "room not allowed")
    [disconnected] = await log(other, "disconnected")
    assert disconnected["reconnect"] is False
    assert len(await log(other, "getToken")) == 1
    assert await log(other, "connected") == []
