"""The browser client's synced presence, in real Chromium against uvicorn subprocesses:
several pages and users join a presence room, churn (a tab closed, a reconnect, a reload
within the grace, a user gone for good), a server restart on the same port; each page's
``client.presence(room)`` ends equal to ``manager.presence(room)``, and ``join``/``leave``
are per user and only for real differences."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
from playwright.async_api import Browser, Page
from websockets.asyncio.server import ServerConnection, serve

from tests.chromium import MARKS
from tests.test_client_browser import AppProcess

pytestmark = MARKS
APP = "tests.presence_app:app"
ROOM = "room-p"
GRACE = 3.0  # the server's grace, seconds: longer than a reload or a reconnect takes here
PRESENCE = json.dumps({"room-*": {"grace": GRACE}, "big-*": {"max_list": 1, "grace": 0}})
EVENTS = ["connected", "disconnected", "joined", "message", "presence", "join", "leave",
          "error", "closed"]

# Creates window.client and logs every event into window.log.
START = """({url, options, events}) => {
  const log = window.log = [];
  const client = window.client = new window.wsplugin.WSClient(url, options);
  for (const name of events) client.on(name, (d) => log.push({event: name, ...d}));
}"""

# Chromium logs each refused connect while the server is down; no other console error.
REFUSED = ("ERR_CONNECTION_REFUSED", "WebSocket connection")


def presence_app() -> AppProcess:
    return AppProcess({"WSPLUGIN_PRESENCE": PRESENCE}, app=APP)




class Pages:
    """Pages of one server, each with a client; every console error is collected."""

    def __init__(self, browser: Browser, app: AppProcess) -> None:
        self.browser = browser
        self.app = app
        self.errors: list[str] = []

    async def open(self, user: str | None, url: str = f"/ws/{ROOM}", **options: Any) -> Page:
        page = await self.browser.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        await start(page, self.app, user, url, **options)
        return page

    def script_errors(self) -> list[str]:
        return [e for e in self.errors if not any(word in e for word in REFUSED)]


async def start(page: Page, app: AppProcess, user: str | None, url: str,
                **options: Any) -> None:
    """Load the blank page and start a client of ``user`` on it."""
    await page.goto(f"{app.url}/page")
    await page.wait_for_function("window.ready === true")
    options = {"params": {"user": user} if user else {}, "backoffMax": 500, **options}
    await page.evaluate(START, {"url": url, "options": options, "events": EVENTS})


async def log(page: Page, *kinds: str, since: int = 0) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await page.evaluate("window.log")
    return [e for e in entries[since:] if not kinds or e["event"] in kinds]


async def mark(page: Page) -> int:
    """The length of the page's log now: ``log(page, since=...)`` reads what came after."""
    length: int = await page.evaluate("window.log.length")
    return length


async def user_events(page: Page, since: int = 0) -> list[tuple[str, str]]:
    return [(e["event"], e["user"]) for e in await log(page, "join", "leave", since=since)]


async def wait_js(page: Page, expression: str, arg: Any = None) -> None:
    await page.wait_for_function(expression, arg=arg, timeout=15_000)


async def wait_users(page: Page, users: set[str], room: str = ROOM) -> None:
    """Until ``client.presence(room)`` lists exactly ``users``."""
    await wait_js(page, """([room, users]) => { const p = window.client.presence(room);
        return p !== null && JSON.stringify(Object.keys(p).sort()) === JSON.stringify(users);
      }""", [room, sorted(users)])


async def wait_event(page: Page, event: str, since: int = 0, **fields: Any) -> None:
    await wait_js(page, """([event, since, fields]) => window.log.slice(since).some((e) =>
        e.event === event && Object.entries(fields).every(([k, v]) => e[k] === v))""",
                  [event, since, fields])


async def client_view(page: Page, room: str = ROOM) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("(room) => window.client.presence(room)", room)
    return state


async def server_view(app: AppProcess, room: str = ROOM) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=app.url) as http:
        users: dict[str, Any] = (await http.get(f"/presence/{room}")).json()
        return users


def infos(users: dict[str, Any]) -> dict[str, Any]:
    return {user: entry["info"] for user, entry in users.items()}


async def assert_in_sync(pages: list[Page], app: AppProcess) -> None:
    """Each page's state equals the server's: ids and info, then (after a refresh, as the
    diffs carry none) the connection counts, and the counts of presenceStats."""
    server = await server_view(app)
    for page in pages:
        assert infos(await client_view(page)) == infos(server)
        refreshed = await page.evaluate("(room) => window.client.refreshPresence(room)", ROOM)
        assert refreshed["users"] == server and refreshed["truncated"] is False
        assert await client_view(page) == server
        stats = await page.evaluate("(room) => window.client.presenceStats(room)", ROOM)
        async with httpx.AsyncClient(base_url=app.url) as http:
            expected = (await http.get(f"/presence_stats/{ROOM}")).json()
        assert stats == {"room": ROOM, **expected}
        count = await page.evaluate("(room) => window.client.presenceCount(room)", ROOM)
        assert count == {**expected, "truncated": False}


async def test_churn_leaves_every_page_in_sync_with_per_user_events(browser: Browser) -> None:
    with presence_app() as app:
        pages = Pages(browser, app)
        obs = await pages.open("obs")
        await wait_users(obs, {"obs"})
        [first] = await log(obs, "presence")  # the first snapshot: the state, no join event
        assert first["users"] == {"obs": {"info": {"name": "Obs"}, "connections": 1}}
        assert first["count"] == {"users": 1, "connections": 1} and first["truncated"] is False
        ann1 = await pages.open("ann")
        ann2 = await pages.open("ann", "/ws/lobby", rooms=[ROOM])  # joined by a join command
        bob = await pages.open("bob")
        cid = await pages.open("cid")
        anon = await pages.open(None)  # a connection without a user: counted, not listed
        everyone = {"obs", "ann", "bob", "cid"}
        for page in (obs, ann1, ann2, bob, cid, anon):
            await wait_users(page, everyone)
        assert await user_events(obs) == [("join", "ann"), ("join", "bob"), ("join", "cid")]
        [ann_joined] = [e for e in await log(obs, "join") if e["user"] == "ann"]
        assert ann_joined == {"event": "join", "room": ROOM, "user": "ann",
                              "info": {"name": "Ann"}}

        # A message of a client with a user carries it.
        await ann2.evaluate("(room) => window.client.publish(room, 'hi')", ROOM)
        await wait_event(obs, "message", data="hi", user="ann")

        # Churn: a tab of ann closed (her other tab stays), bob's connection dropped by the
        # server (his client reconnects), ann's last tab reloaded: all within the grace.
        before = {page: await mark(page) for page in (obs, bob, cid, anon)}
        await ann1.close()
        async with httpx.AsyncClient(base_url=app.url) as http:
            bob_id = await bob.evaluate("window.client.connectionId")
            assert (await http.post(f"/drop/{bob_id}")).json() == {"dropped": True}
        await wait_event(bob, "connected", before[bob], reconnected=True)
        await wait_js(bob, """() => {  // the fresh snapshot after the reconnect
            const last = (kind) => window.log.findLastIndex((e) => e.event === kind);
            return last("presence") > last("connected"); }""")
        await wait_users(bob, everyone)
        await ann2.reload()
        await start(ann2, app, "ann", "/ws/lobby", rooms=[ROOM])
        await wait_users(ann2, everyone)
        after_reload = await mark(ann2)
        # cid goes for good: the one real change, a leave after the grace. Any leave of a
        # user away longer than the grace would have come out by then (one sweep per room).
        await cid.close()
        for page in (obs, bob, ann2, anon):
            await wait_event(page, "leave", user="cid")
            await wait_users(page, {"obs", "ann", "bob"})
        for page in (obs, bob, anon):
            assert await user_events(page, since=before[page]) == [("leave", "cid")]
        assert await user_events(ann2) == [("leave", "cid")]  # its first snapshot: no joins
        assert await log(ann2, "join", since=after_reload) == []
        [left] = await log(obs, "leave")
        assert left == {"event": "leave", "room": ROOM, "user": "cid", "info": {"name": "Cid"}}
        await assert_in_sync([obs, bob, ann2, anon], app)
        assert (await server_view(app))["ann"]["connections"] == 1

        # Requests: members only, presence rooms only.
        refused = await ann2.evaluate("""() => Promise.all([
            window.client.presenceStats('lobby').catch((e) => [e.name, e.code]),
            window.client.refreshPresence('lobby').catch((e) => [e.name, e.code]),
            window.client.presenceStats('elsewhere').catch((e) => [e.name, e.code])])""")
        assert refused == [["RequestError", "no_presence"], ["RequestError", "no_presence"],
                           ["RequestError", "not_joined"]]
        assert await ann2.evaluate("window.client.presence('lobby')") is None
        assert pages.errors == []


async def test_a_truncated_snapshot_keeps_counts_only(browser: Browser) -> None:
    with presence_app() as app:
        pages = Pages(browser, app)
        ann = await pages.open("ann", "/ws/big-1")
        await wait_users(ann, {"ann"}, "big-1")
        bob = await pages.open("bob", "/ws/lobby")
        await wait_event(bob, "connected")
        detail = await bob.evaluate("(room) => window.client.join(room)", "big-1")
        assert detail["room"] == "big-1"
        await wait_event(bob, "presence", room="big-1")
        [snapshot] = await log(bob, "presence")
        assert snapshot == {"event": "presence", "room": "big-1", "users": None,
                            "count": {"users": 2, "connections": 2}, "truncated": True}
        assert await client_view(bob, "big-1") is None
        count = await bob.evaluate("window.client.presenceCount('big-1')")
        assert count == {"users": 2, "connections": 2, "truncated": True}
        stats = await bob.evaluate("window.client.presenceStats('big-1')")
        assert stats == {"room": "big-1", "users": 2, "connections": 2}
        assert await user_events(bob) == []  # no list, nothing to compare against
        await bob.evaluate("window.client.leave('big-1')")
        assert await bob.evaluate("window.client.presenceCount('big-1')") is None
        assert pages.errors == []


async def test_a_server_restart_emits_only_real_differences(browser: Browser) -> None:
    with presence_app() as app:
        pages = Pages(browser, app)
        users = {"ann": await pages.open("ann", presenceGrace=5000),
                 "bob": await pages.open("bob", presenceGrace=5000),
                 "cid": await pages.open("cid", presenceGrace=5000)}
        for page in users.values():
            await wait_users(page, set(users))
        ann, bob, cid = users.values()
        before = {page: await mark(page) for page in (ann, bob)}
        app.kill()  # the memory backend: the server's presence is gone with its process
        for page in (ann, bob, cid):
            await wait_event(page, "disconnected", wasConnected=True)
        await cid.close()  # cid does not come back: the one real leave
        app.start()  # the same port: rebuilt by the clients that reconnect
        for page in (ann, bob):
            await wait_event(page, "connected", before[page], reconnected=True)
        dan = await pages.open("dan")  # and a new user: the one real join
        for page in (ann, bob):
            await wait_event(page, "leave", before[page], user="cid")
            await wait_users(page, {"ann", "bob", "dan"})
            events = await user_events(page, since=before[page])
            assert sorted(events) == [("join", "dan"), ("leave", "cid")], events
            # Until the client's grace ended, cid was kept with no connection.
            states = [e["users"] for e in await log(page, "presence", since=before[page])]
            held = {"info": {"name": "Cid"}, "connections": 0}
            assert any(state.get("cid") == held for state in states)
            assert "cid" not in states[-1]
        await wait_users(dan, {"ann", "bob", "dan"})
        assert await user_events(dan) == []  # ann and bob were back: in its first snapshot
        await assert_in_sync([ann, bob, dan], app)
        assert pages.script_errors() == []


class ScriptedServer:
    """A real WebSocket server that sends exactly the frames the test queues, in order, and
    hands over the commands it receives: the wire orders a real server rarely produces."""

    def __init__(self) -> None:
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handler(self, ws: ServerConnection) -> None:
        async def write() -> None:
            while True:
                await ws.send(json.dumps(await self.outgoing.get()))

        writer = asyncio.create_task(write())
        try:
            async for raw in ws:  # until the connection closes
                await self.incoming.put(json.loads(raw))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def send(self, *frames: dict[str, Any]) -> None:
        for frame in frames:
            self.outgoing.put_nowait(frame)

    async def command(self, kind: str) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.incoming.get(), 10)
        assert frame["type"] == kind, frame
        return frame


async def ask(page: Page, request: str) -> None:
    """Start a request in the page (its promise kept as ``window.pending``), not awaited."""
    await page.evaluate(f"() => {{ window.pending = {request}; }}")


def snapshot(*users: str, **extra: Any) -> dict[str, Any]:
    listed = {user: {"connections": 1, "info": {"name": user}} for user in users}
    return {"type": "presence", "room": "room-s", "users": listed,
            "count": {"users": len(users), "connections": len(users)}, **extra}


def diff(joins: tuple[str, ...] = (), leaves: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "presence_diff", "room": "room-s",
            "joins": {user: {"info": {"name": user}} for user in joins},
            "leaves": {user: {} for user in leaves}}


async def test_diffs_around_a_snapshot_are_applied_in_order(browser: Browser) -> None:
    scripted = ScriptedServer()
    async with serve(scripted.handler, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        with presence_app() as app:  # serves the page and the client module
            pages = Pages(browser, app)
            page = await pages.open(None, f"ws://127.0.0.1:{port}/ws/room-s")
            # A diff that came before the snapshot may be newer than it: replayed on top.
            scripted.send({"type": "welcome", "connection_id": "c1", "rooms": ["room-s"]},
                          diff(leaves=("x",)), snapshot("me", "x"))
            await wait_users(page, {"me"}, "room-s")
            assert [e["users"] for e in await log(page, "presence")] == [
                {"me": {"connections": 1, "info": {"name": "me"}}}]
            assert await user_events(page) == []  # the first snapshot: no joins

            # Diffs repeat what the snapshot had (its own join): nothing happens.
            scripted.send(diff(joins=("me",)), diff(joins=("y",)), diff(leaves=("y", "gone")))
            await wait_event(page, "leave", user="y")
            assert await user_events(page) == [("join", "y"), ("leave", "y")]
            assert len(await log(page, "presence")) == 3  # the repeat changed nothing

            # A refresh: a diff that came while it was on its way is replayed on its answer.
            since = await mark(page)
            await ask(page, "window.client.refreshPresence('room-s')")
            asked = await scripted.command("presence")
            assert asked == {"type": "presence", "room": "room-s", "id": asked["id"]}
            scripted.send(diff(joins=("z",)), snapshot("me", id=asked["id"]))
            refreshed = await page.evaluate("window.pending")
            assert set(refreshed["users"]) == {"me", "z"}
            assert "connections" not in refreshed["users"]["z"]  # known from a diff only
            assert await user_events(page, since) == [("join", "z")]

            # presenceStats: answered by id, or refused.
            await ask(page, "window.client.presenceStats('room-s')")
            asked = await scripted.command("presence_stats")
            scripted.send({"type": "presence_stats", "room": "room-s", "users": 5,
                           "connections": 7, "id": asked["id"]})
            assert await page.evaluate("window.pending") == {
                "room": "room-s", "users": 5, "connections": 7}
            await ask(page, """window.client.presenceStats('room-s')
                .catch((e) => [e.name, e.code, e.detail])""")
            asked = await scripted.command("presence_stats")
            scripted.send({"type": "error", "code": "no_presence", "detail": "no",
                           "id": asked["id"]})
            assert await page.evaluate("window.pending") == ["RequestError", "no_presence", "no"]

            # Truncated: no list, no events; listed again: no joins (nothing to compare with).
            since = await mark(page)
            await ask(page, "window.client.refreshPresence('room-s')")
            asked = await scripted.command("presence")
            scripted.send({"type": "presence", "room": "room-s", "truncated": True,
                           "count": {"users": 3000, "connections": 3100}, "id": asked["id"]},
                          diff(joins=("w",)))
            truncated = await page.evaluate("window.pending")
            assert truncated == {"room": "room-s", "users": None, "truncated": True,
                                 "count": {"users": 3000, "connections": 3100}}
            await ask(page, "window.client.refreshPresence('room-s')")
            asked = await scripted.command("presence")
            scripted.send(snapshot("me", "w", id=asked["id"]))
            assert set((await page.evaluate("window.pending"))["users"]) == {"me", "w"}
            assert await user_events(page, since) == []
            assert pages.errors == []
