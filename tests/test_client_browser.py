"""The served browser client (``/ws-client.js``) in real Chromium against uvicorn subprocesses
that the tests kill, stop and restart on the same port: reconnect, rejoin, recover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page
from websockets.asyncio.client import ClientConnection, connect

from tests.chromium import MARKS
from tests.support import ROOT, free_port, wait_port

pytestmark = MARKS
APP = "tests.client_app:app"
EVENTS = ["connected", "disconnected", "message", "joined", "left", "recovered", "reset",
          "error", "closed"]

# Creates window.client and logs every event into window.log (with a timestamp).
START = """({url, options, events}) => {
  const log = window.log = [];
  window.reloads = [];
  const client = window.client = new window.wsplugin.WSClient(url, options);
  for (const name of events) client.on(name, (d) => log.push({event: name, at: Date.now(), ...d}));
  client.on("reset", (d) => window.reloads.push(d.room));  // the app reloads the room
}"""


class AppProcess:
    """``uvicorn <app>`` on a fixed port: killed, paused, started again."""

    def __init__(self, env: dict[str, str] | None = None, app: str = APP) -> None:
        self.app = app
        self.port = free_port()
        self.env = {**os.environ, "PYTHONPATH": ROOT, "WSPLUGIN_BACKEND": "memory://",
                    "WSPLUGIN_ADMIN_PATH": "off", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppProcess:
        cmd = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT)
        wait_port(self.port)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the sockets vanish without a close frame (the browser sees 1006)."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def server() -> Iterator[AppProcess]:
    with AppProcess() as running:
        yield running




async def client_page(browser: Browser, app: AppProcess, path: str, **options: Any) -> Page:
    page = await browser.new_page()
    await page.goto(f"{app.url}/page")
    await page.wait_for_function("window.ready === true")
    await page.evaluate(START, {"url": path, "options": options, "events": EVENTS})
    return page


async def log(page: Page, event: str | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await page.evaluate("window.log")
    return [e for e in entries if event is None or e["event"] == event]


async def wait_for(page: Page, event: str, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Wait until ``count`` events of this kind (with these field values) were logged."""
    await page.wait_for_function(
        """([event, count, fields]) => window.log.filter((e) => e.event === event &&
             Object.entries(fields).every(([k, v]) => e[k] === v)).length >= count""",
        arg=[event, count, fields], timeout=10_000,
    )
    return [e for e in await log(page, event) if all(e.get(k) == v for k, v in fields.items())]


def room_messages(entries: list[dict[str, Any]], room: str) -> list[Any]:
    return [(e.get("offset"), e["data"]) for e in entries if e["event"] == "message"
            and e["room"] == room]


async def publish(page: Page, room: str, data: Any, ack_ms: int = 5000) -> dict[str, Any]:
    """``client.publish`` in the page: ``{"ok": ack}`` or ``{"error": ..., "fate": ...}``."""
    result: dict[str, Any] = await page.evaluate(
        """([room, data, timeout]) => window.client.publish(room, data, {timeout}).then(
             (ack) => ({ok: ack}), (e) => ({error: e.code, fate: e.fate}))""",
        [room, data, ack_ms],
    )
    return result


async def test_backoff_schedule_is_full_jitter_and_seeded(browser: Browser,
                                                          server: AppProcess) -> None:
    page = await client_page(browser, server, "/ws/unused")
    schedule = await page.evaluate("""() => {
      const {backoffDelay, reconnectDelay} = window.wsplugin;
      const seeded = (seed) => () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
      const run = (seed) => { const random = seeded(seed);
        return [...Array(10).keys()].map((n) => backoffDelay(n, {random})); };
      return {a: run(42), b: run(42), c: run(7),
              top: [...Array(10).keys()].map((n) => backoffDelay(n, {random: () => 1 - 1e-9})),
              zero: backoffDelay(3, {random: () => 0}),
              limited: reconnectDelay(4029, 0, {random: () => 0, rateLimitPause: 10000}),
              lost: reconnectDelay(1006, 0, {random: () => 0})};
    }""")
    assert schedule["a"] == schedule["b"] != schedule["c"]  # a pure function of the random
    caps = [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000]
    assert all(0 <= d < cap for d, cap in zip(schedule["a"], caps, strict=True))
    assert schedule["top"] == [cap - 1 for cap in caps]
    assert (schedule["zero"], schedule["limited"], schedule["lost"]) == (0, 10000, 0)


async def test_connect_join_publish_ack_and_refusals(browser: Browser,
                                                     server: AppProcess) -> None:
    page = await client_page(browser, server, "/ws/plain-a", rooms=["h-ack"])
    await wait_for(page, "joined", room="h-ack")
    [connected] = await log(page, "connected")
    assert connected["reconnected"] is False
    assert await page.evaluate("client.state") == "open"
    assert await publish(page, "plain-a", {"n": 1}) == {"ok": {"room": "plain-a", "offset": None}}
    assert await publish(page, "h-ack", "x") == {"ok": {"room": "h-ack", "offset": 1}}
    assert await publish(page, "elsewhere", 1) == {"error": "not_joined", "fate": "not_delivered"}
    await wait_for(page, "message", 2)
    entries = await log(page)
    assert room_messages(entries, "plain-a") == [(None, {"n": 1})]
    assert room_messages(entries, "h-ack") == [(1, "x")]
    assert await page.evaluate("client.position('h-ack').offset") == 1
    refused = await page.evaluate("client.join('no-way').then(() => 'joined', (e) => e.code)")
    assert refused == "forbidden"
    assert await page.evaluate("client.rooms") == ["plain-a", "h-ack"]

    # A handshake refused with HTTP 403 (authorize says no to rooms no-*): terminal.
    other = await client_page(browser, server, "/ws/no-entry", backoffMin=50)
    [closed] = await wait_for(other, "closed")
    assert closed["code"] == 1008 and "refused" in closed["reason"]
    assert await log(other, "connected") == []
    assert len(await log(other, "disconnected")) == 1  # two refusals, one retry in between


async def test_kick_is_terminal(browser: Browser, server: AppProcess) -> None:
    page = await client_page(browser, server, "/ws/kick-me", backoffMin=50)
    await wait_for(page, "connected")
    async with httpx.AsyncClient(base_url=server.url) as http:
        kicked = await http.post("/kick/kick-me", params={"reason": "spamming"})
        assert kicked.json() == {"kicked": 1}
        [closed] = await wait_for(page, "closed")
        assert (closed["code"], closed["reason"]) == (4000, "spamming")
        [disconnected] = await log(page, "disconnected")
        assert disconnected["reconnect"] is False
        await page.wait_for_timeout(600)  # several backoffs of 50 ms: nothing reconnects
        assert len(await log(page, "connected")) == 1
        assert await page.evaluate("client.state") == "closed"
        assert (await http.post("/kick/kick-me")).json() == {"kicked": 0}
    result = await publish(page, "kick-me", 1)
    assert result == {"error": "closed", "fate": "not_delivered"}


async def test_rate_limited_client_pauses_longer(browser: Browser, server: AppProcess) -> None:
    page = await client_page(browser, server, "/ws/flood", backoffMin=100, rateLimitPause=1500)
    await wait_for(page, "connected")
    fates = await page.evaluate("""() => Promise.all([...Array(150).keys()].map((n) =>
        client.publish("flood", n).then(() => "ok", (e) => e.fate)))""")
    # All were sent: acknowledged, or in flight when 4029 came (fate unknown, never resent).
    assert "unknown" in fates and set(fates) <= {"ok", "unknown"}
    [disconnected] = await wait_for(page, "disconnected")
    assert disconnected["code"] == 4029 and disconnected["reconnect"] is True
    assert 1500 <= disconnected["delay"] < 1600
    [_, again] = await wait_for(page, "connected", 2)
    assert again["reconnected"] is True
    assert again["at"] - disconnected["at"] >= 1400


async def test_memory_restart_resets_and_offline_publish(browser: Browser) -> None:
    with AppProcess() as app:
        page = await client_page(browser, app, "/ws/h-mem", rooms=["plain-m"], backoffMax=800)
        await wait_for(page, "joined", room="plain-m")
        for n in (1, 2):
            assert (await publish(page, "h-mem", n))["ok"]["offset"] == n
        epoch = await page.evaluate("client.position('h-mem').epoch")
        app.kill()
        await wait_for(page, "disconnected", code=1006, wasConnected=True)
        assert await page.evaluate("client.state") in ("waiting", "connecting")
        # Sent while offline: one outlives the outage, one times out (never sent).
        await page.evaluate("""() => { window.later = client.publish('h-mem', 'offline',
          {timeout: 15000}).catch((e) => ({error: e.code})); }""")
        assert await publish(page, "h-mem", "lost", ack_ms=300) == {
            "error": "timeout", "fate": "not_delivered"}
        app.start()  # the same port: a new process, so a new epoch
        await wait_for(page, "connected", 2)
        [recovered] = await wait_for(page, "recovered", room="h-mem")
        assert recovered["recovered"] is False and recovered["epoch"] != epoch
        [reset] = await wait_for(page, "reset", room="h-mem")
        assert reset["cause"] == "recovery_failed"
        assert await page.evaluate("window.reloads") == ["h-mem"]
        assert await page.evaluate("window.later") == {"room": "h-mem", "offset": 1}
        await wait_for(page, "joined", 2, room="plain-m")  # rejoined by a join command
        messages = room_messages(await log(page), "h-mem")
        assert messages == [(1, 1), (2, 2), (1, "offline")]


@pytest.mark.redis
async def test_redis_restart_recovers_missed_messages(
    browser: Browser, redis_url: str, redis_prefix: str
) -> None:
    env = {"WSPLUGIN_BACKEND": redis_url, "WSPLUGIN_REDIS_PREFIX": redis_prefix}
    with AppProcess(env) as node_a, AppProcess(env) as node_b:
        page = await client_page(browser, node_a, "/ws/h-url", rooms=["h-join"], backoffMax=800)
        await wait_for(page, "joined", room="h-join")
        async with connect(f"ws://127.0.0.1:{node_b.port}/ws/h-url") as other:
            await command(other, {"type": "join", "room": "h-join", "id": 0}, "joined")
            for n in (1, 2):
                await other_publishes(other, n)
            await wait_for(page, "message", 4)
            node_a.kill()
            await wait_for(page, "disconnected", wasConnected=True)
            for n in (3, 4, 5):  # while the page's server is down
                await other_publishes(other, n)
            node_a.start()
            await wait_for(page, "connected", 2)
            for room in ("h-url", "h-join"):
                [recovered] = await wait_for(page, "recovered", room=room)
                assert recovered["recovered"] is True and recovered["offset"] == 5
            await other_publishes(other, 6)  # live again
            await wait_for(page, "message", 12)
        entries = await log(page)
        for room in ("h-url", "h-join"):
            assert room_messages(entries, room) == [(n, f"{room}-{n}") for n in range(1, 7)]
        assert await log(page, "reset") == []


async def command(ws: ClientConnection, frame: dict[str, Any], answer: str) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    while True:
        reply: dict[str, Any] = json.loads(await ws.recv())
        if reply["type"] == answer and reply.get("id") == frame.get("id"):
            return reply
        assert reply["type"] in ("welcome", "message", "joined"), reply


async def other_publishes(ws: ClientConnection, n: int) -> None:
    for room in ("h-url", "h-join"):
        frame = {"type": "publish", "room": room, "data": f"{room}-{n}", "id": f"{room}-{n}"}
        assert (await command(ws, frame, "published"))["offset"] == n


async def test_half_open_link_is_detected_by_the_heartbeat(browser: Browser) -> None:
    with AppProcess() as app:
        page = await client_page(browser, app, "/ws/quiet", heartbeatInterval=400,
                                 heartbeatTimeout=400, connectTimeout=800, backoffMax=300)
        await wait_for(page, "connected")
        await page.wait_for_timeout(1000)  # pings answered: still the same connection
        assert await log(page, "disconnected") == []
        app.signal(signal.SIGSTOP)  # the TCP connection stays open but nothing answers
        started = time.monotonic()
        dead = (await wait_for(page, "disconnected"))[0]
        assert dead["reason"] == "no pong in time" and dead["reconnect"] is True
        assert time.monotonic() - started < 2.5
        app.signal(signal.SIGCONT)
        [_, again] = await wait_for(page, "connected", 2)
        assert again["reconnected"] is True
