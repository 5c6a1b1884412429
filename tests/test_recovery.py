"""Recovery under load: paged, paced by each connection, a bounded number at a time per node.

Real uvicorn servers, real clients. The storm test runs its recovering clients in a process
of their own (``tests/recovery_clients.py``) so that ``tracemalloc`` in this process sees
the server's allocations only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support import ROOT, ThreadServer
from tests.test_connection import SNDBUF, stalled_client
from tests.test_history import echo, messages, welcome
from tests.test_metrics import PATH, scrape, value
from tests.ws_helpers import (
    abort,
    errors_logged,
    on_server,
    open_client,
    recv_json,
    send_json,
    serve,
    wait_until,
)
from wsplugin import History, WebSocketManager

CLIENTS = 20
MISSED = 100
LIVE = 12
PAD = "x" * 16_000
QUEUE = 128 * 1024  # max_queue_bytes: each recovery is 12x this
BACKENDS = ["memory", "memory-batch", pytest.param("redis", marks=pytest.mark.redis)]
"""``memory-batch``: the clients ask for coalesced frames (``?batch=1``)."""


def backend_url(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    if backend.startswith("memory"):
        return {"backend": "memory://"}
    return {"backend": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix")}


@contextlib.contextmanager
def storm_server(**options: Any) -> Iterator[tuple[ThreadServer, WebSocketManager]]:
    options.setdefault("history", {"h-*": History(size=400, ttl=120)})
    with serve(sndbuf=SNDBUF, on_message=echo, max_queue_bytes=QUEUE, rate_limit=None,
               recovery_max_messages=400, **options) as pair:
        yield pair


async def fill(server: ThreadServer, manager: WebSocketManager, room: str, first: int,
               count: int) -> None:
    async def publish() -> None:
        for i in range(first, first + count):
            await manager.broadcast(room, {"i": i, "pad": PAD})

    await on_server(server, publish(), 30)


class Clients:
    """The recovering clients' process: its welcomes so far, then its results."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.welcomes: dict[int, dict[str, Any]] = {}
        self.results: dict[int, list[list[Any]]] = {}

    async def read_line(self) -> None:
        assert self.proc.stdout is not None
        line = (await asyncio.to_thread(self.proc.stdout.readline)).decode()
        assert line, "the clients' process ended"
        kind, index, payload = line.rstrip("\n").split(" ", 2)
        target: dict[int, Any] = self.welcomes if kind == "welcome" else self.results
        target[int(index)] = json.loads(payload)

    async def until(self, what: dict[int, Any], count: int) -> None:
        async with asyncio.timeout(60):
            while len(what) < count:
                await self.read_line()

    def go(self, top: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {top}\n".encode())
        self.proc.stdin.flush()


@contextlib.contextmanager
def recovering_clients(url: str, count: int) -> Iterator[Clients]:
    with subprocess.Popen([sys.executable, "-m", "tests.recovery_clients", url, str(count)],
                          cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            yield Clients(proc)
        finally:
            if proc.poll() is None:
                proc.kill()


def check_exact(welcome: dict[str, Any], frames: list[list[Any]], top: int) -> None:
    """recovered: every message after 0, once, in order; or not: every one after the reply."""
    first = 1 if welcome["recovered"] else welcome["offset"] + 1
    assert frames == [["m", offset] for offset in range(first, top + 1)], welcome


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_recovery_storm_stays_within_the_queue_bounds(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    """20 clients recover 100 messages of 16 KB (12x their queue bound) each, at once, and
    read nothing until told: the server holds about a queue bound per connection, not
    everything; each gets all its messages once in order (or ``recovered: false``), a
    bystander is served meanwhile, and (Redis) the node's registry keeps being written."""
    options = backend_url(request, backend)
    with errors_logged(caplog) as errors, storm_server(**options) as (server, manager), \
            contextlib.ExitStack() as stack:
        other = None
        if backend == "redis":  # a second node that reads the first one's registry
            other = stack.enter_context(serve(on_message=echo, **options))
        away, hello = await welcome(server, "h-storm")
        await away.close()
        await fill(server, manager, "h-storm", 1, MISSED)
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            url = f"{server.ws_url}/ws/h-storm?epoch={hello['epoch']}&offset=0"
            if backend.endswith("batch"):
                url += "&batch=1"
            with recovering_clients(url, CLIENTS) as clients:
                await clients.until(clients.welcomes, 16)  # the default concurrency limit
                bystander, bystander_id = await open_client(server, "lobby")
                await on_server(server, manager.broadcast("lobby", "still served"))
                assert (await recv_json(bystander))["data"] == "still served"
                if other is not None:
                    async def listed() -> bool:
                        conns = await on_server(other[0], other[1].connections("lobby"))
                        return [c.id for c in conns] == [bystander_id]

                    await wait_until(listed, what="the bystander in the other node's view")
                await fill(server, manager, "h-storm", MISSED + 1, LIVE)  # live, meanwhile
                clients.go(MISSED + LIVE)
                await clients.until(clients.results, CLIENTS)
                await clients.until(clients.welcomes, CLIENTS)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        recovered = sum(1 for w in clients.welcomes.values() if w["recovered"])
        growth = peak - before
        print(f"{backend}: {recovered} of {CLIENTS} recovered; peak growth "
              f"{growth / 2**20:.1f} MiB for {CLIENTS * MISSED * len(PAD) / 2**20:.1f} MiB "
              "recovered")
        # About a queue bound and a page per connection (the transport's own buffer and
        # the decoding of a page come on top), not the 30 MiB recovered.
        assert growth < CLIENTS * 4 * QUEUE
        for index in range(CLIENTS):
            check_exact(clients.welcomes[index], clients.results[index], MISSED + LIVE)
        assert recovered >= 16
        await bystander.close()
    assert errors == []
    assert not [r for r in caplog.records if "registry write failed" in r.getMessage()]


BAD_OFFSETS = [
    "\N{SUPERSCRIPT TWO}",  # str.isdigit() is True, int() refuses it
    "\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT TWO}",  # int() reads it as 12
    "\N{MATHEMATICAL DOUBLE-STRUCK DIGIT ONE}",
    "1" * 4400,  # beyond int()'s 4,300 digits
    "9" * 17, "", "-1", "+1", " 1", "1_0", "0x1", "1.0",
]


async def test_a_malformed_url_offset_is_not_recovered_and_never_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Non-ASCII digits (which ``str.isdigit`` accepts), an offset of 4,400 digits (beyond
    ``int``'s limit) or of 17: ``recovered: false``, never a 1011 close or an ERROR log."""
    with errors_logged(caplog) as errors, \
            serve(history={"h-*": History(size=10)}, on_message=echo) as (server, manager):
        ws, hello = await welcome(server, "h-url")
        await on_server(server, manager.broadcast("h-url", "one"))
        await messages(ws, 1)
        for offset in [*BAD_OFFSETS, "9999999999999999"]:  # 16 digits: read, but ahead
            back, reply = await welcome(
                server, "h-url", f"?epoch={hello['epoch']}&offset={quote(offset)}")
            assert (reply["recovered"], reply["offset"]) == (False, 1), offset
            await send_json(back, {"type": "ping", "id": 7})
            assert await recv_json(back) == {"type": "pong", "id": 7}
            await back.close()
        good, reply = await welcome(server, "h-url", f"?epoch={hello['epoch']}&offset=0")
        assert reply["recovered"] is True
        assert [f["data"] for f in await messages(good, 1)] == ["one"]
        await good.close()
        await ws.close()
    assert errors == []
    assert manager.tally.closes["1011"] == 0


async def stalled_recovery(server: ThreadServer, room: str, epoch: str) -> ClientConnection:
    """A recovering client that reads its reply and then nothing (until it is read)."""
    ws, _ = await stalled_client(server, f"{room}?epoch={epoch}&offset=0")
    return ws


async def test_recoveries_beyond_the_limit_wait_then_are_not_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With one slot, a recovery behind a stalled one waits ``recovery_wait`` and gets
    ``recovered: false`` (and then the live messages); once the slot is free, a recovery
    gets it."""
    with errors_logged(caplog) as errors, \
            storm_server(max_concurrent_recoveries=1, recovery_wait=0.2) as (server, manager):
        away, hello = await welcome(server, "h-slot")
        await away.close()
        await fill(server, manager, "h-slot", 1, MISSED)
        stalled = await stalled_recovery(server, "h-slot", hello["epoch"])
        recoveries = manager.streams.recoveries
        assert recoveries.running == 1  # stuck behind its full queue
        late, reply = await welcome(server, "h-slot", f"?epoch={hello['epoch']}&offset=0")
        assert (reply["recovered"], reply["offset"]) == (False, MISSED)
        await on_server(server, manager.broadcast("h-slot", "live"))
        assert [f["offset"] for f in await messages(late, 1)] == [MISSED + 1]
        await late.close()
        await abort(stalled)

        async def free() -> bool:
            return recoveries.running == 0

        await wait_until(free, what="the slot to be free")
        again, reply = await welcome(server, "h-slot", f"?epoch={hello['epoch']}&offset=0")
        assert reply["recovered"] is True
        got = [f["offset"] for f in await messages(again, MISSED + 1)]
        assert got == list(range(1, MISSED + 2))
        await again.close()
    assert errors == []


async def test_leaving_the_room_during_a_recovery_ends_it_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Removed from the room mid-recovery (server-side ``leave``): the recovery stops, frees
    its slot and leaves no joiner behind; joined again, the connection is served live."""
    with errors_logged(caplog) as errors, storm_server() as (server, manager):
        away, hello = await welcome(server, "h-leave")
        await away.close()
        await fill(server, manager, "h-leave", 1, MISSED)
        ws, cid = await stalled_client(server, f"h-leave?epoch={hello['epoch']}&offset=0")
        recoveries = manager.streams.recoveries
        assert recoveries.running == 1
        assert await on_server(server, manager.leave(cid, "h-leave"))
        offsets: list[Any] = []
        while not offsets or offsets[-1] != "left":  # reading lets the recovery go on
            frame = await recv_json(ws)
            offsets.append(frame.get("offset", frame["type"]))
        assert offsets[:-1] == list(range(1, len(offsets)))

        async def ended() -> bool:
            return recoveries.running == 0

        await wait_until(ended, what="the recovery to end")
        stream = manager.streams.streams.get("h-leave")  # gone with its last member
        assert stream is None or stream.joiners == {}
        assert manager.tally.recoveries.outcomes == {"recovered": 0, "not_recovered": 0,
                                                     "reset": 0}
        assert await on_server(server, manager.join(cid, "h-leave"))
        joined = await recv_json(ws)
        assert (joined["type"], joined["offset"]) == ("joined", MISSED)
        await on_server(server, manager.broadcast("h-leave", "live"))
        assert [f["offset"] for f in await messages(ws, 1)] == [MISSED + 1]
        await ws.close()
    assert errors == []


async def test_history_lost_during_a_recovery_is_a_reset_and_every_outcome_is_measured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A recovery whose messages are trimmed while its client reads slowly ends with a
    ``reset`` at the room's position, then live messages. ``/ws-metrics`` counts that, a
    complete recovery and a refused one, with their sizes and durations."""
    history = {"h-*": History(size=MISSED, ttl=60)}
    with errors_logged(caplog) as errors, \
            storm_server(history=history, metrics_path=PATH) as (server, manager):
        away, hello = await welcome(server, "h-lost")
        await away.close()
        await fill(server, manager, "h-lost", 1, 30)
        epoch = hello["epoch"]
        quick, reply = await welcome(server, "h-lost", f"?epoch={epoch}&offset=27")
        assert reply["recovered"] is True
        assert [f["offset"] for f in await messages(quick, 3)] == [28, 29, 30]
        refused, reply = await welcome(server, "h-lost", "?epoch=deadbeef&offset=3")
        assert reply["recovered"] is False
        slow = await stalled_recovery(server, "h-lost", epoch)
        await fill(server, manager, "h-lost", 31, MISSED)  # trims 1-30 and more
        for ws in (quick, refused):
            got = [f["offset"] for f in await messages(ws, MISSED)]
            assert got == list(range(31, 31 + MISSED))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "reset":
            frames.append(await recv_json(slow))
        offsets = [f["offset"] for f in frames[:-1]]
        assert offsets == list(range(1, len(offsets) + 1)) and len(offsets) < 30
        assert frames[-1] == {"type": "reset", "room": "h-lost", "epoch": epoch,
                              "offset": 30 + MISSED}
        await on_server(server, manager.broadcast("h-lost", "after"))
        assert [f["offset"] for f in await messages(slow, 1)] == [31 + MISSED]
        samples = await scrape(server)
        for outcome in ("recovered", "not_recovered", "reset"):
            assert value(samples, "wsplugin_recoveries_total", outcome=outcome) == 1
        assert value(samples, "wsplugin_recovery_messages_count") == 3
        assert value(samples, "wsplugin_recovery_messages_sum") == 3 + len(offsets)
        assert value(samples, "wsplugin_recovery_messages_bucket", le="0.0") == 1
        assert value(samples, "wsplugin_recovery_seconds_count") == 3
        assert value(samples, "wsplugin_recovery_seconds_bucket", le="+Inf") == 3
        stats = manager.local_stats()
        assert (stats["recoveries"], stats["recoveries_failed"], stats["recoveries_reset"]) \
            == (1, 1, 1)
        for ws in (quick, refused, slow):
            await ws.close()
    assert errors == []
