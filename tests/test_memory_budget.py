"""An idle connection's Python allocations stay within a budget: 500 connections held by
a client process against a real uvicorn server in this process, traced with tracemalloc
(only the server's allocations: the clients live in another process)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.support import ROOT, ThreadServer
from tests.ws_helpers import serve, uvicorn_ws, wait_until
from wsplugin import Connection, History, Presence, RoomOptions, WebSocketManager

__all__ = ["uvicorn_ws"]

CONNECTIONS = 500
WARM = 10

BUDGET = {"plain": 13_800, "deflate": 14_300}
"""Traced bytes per idle connection in a plain room, by the client's offer (none, or
Chromium's permessage-deflate). Set from the measurement (2026-12-06, Python 3.11,
uvicorn 0.54, websockets 17.4, wsproto 1.3.2): 13,060-13,097 / 13,550-13,563 bytes under
websockets-sansio (12,995 plain with :data:`OTHER_ROOMS`), 12,460 / 12,573 under wsproto
(the same within ~100 bytes in every run: allocations, not timings), plus ~5 %, so a
regression of about 650 bytes per connection fails here. Before: 21,000 / 22,000 (measured
19,856 / 20,962), and 28,300 / 76,000 before this budget existed (sansio). Where the bytes
go: docs/benchmarks.md, "Idle memory: where the bytes go"."""


class Note(BaseModel):
    text: str


def typed_members_only(identity: Any, room: str) -> bool:
    """The ``authorize`` hook of the typed rooms."""
    return identity is not None


async def on_note(conn: Connection, room: str, note: Note) -> Note:
    """The typed handler of the typed rooms."""
    return note


OTHER_ROOMS: dict[str, Any] = {
    "presence": {"other-*": Presence()},
    "history": {"other-*": History(size=100, ttl=60)},
    "rooms": {"typed-*": RoomOptions(publish=Note, message=Note, max_message_bytes=1024,
                                     rate_limit=(5, 1.0), authorize=typed_members_only)},
}
"""Room features configured for rooms other than the measured one: a plain room must pay
nothing for them. Besides presence and history, typed rooms (models, a typed handler
registered with ``on_publish``, per-room limits) with their own ``authorize`` hook: the
per-room part of authentication. Token auth (``authenticate=JWTAuth(...)``) is not per
room: it changes every connection's handshake (docs/auth.md), so it is not configured here."""


class IdleClients:
    """``n`` idle clients in a child process (``tests/idle_clients.py``)."""

    def __init__(self, url: str, n: int, deflate: bool) -> None:
        cmd = [sys.executable, "-m", "tests.idle_clients", url, str(n)]
        self.proc = subprocess.Popen([*cmd, *(["--deflate"] if deflate else [])], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ready(self) -> None:
        """Wait until every client is open (without blocking this thread's loop)."""
        assert self.proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        assert line.startswith("ready"), f"the idle clients failed: {line!r}"

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.asynccontextmanager
async def idle_clients(url: str, n: int, deflate: bool) -> AsyncIterator[IdleClients]:
    clients = IdleClients(url, n, deflate)
    try:
        await clients.ready()
        yield clients
    finally:
        clients.close()


async def connections(manager: WebSocketManager) -> int:
    return len(manager.hub.connections)


async def traced_per_connection(server: ThreadServer, manager: WebSocketManager, room: str,
                                deflate: bool) -> tuple[float, list[Any]]:
    """Bytes allocated (and still held) per idle connection; the top allocation sites."""
    url = f"{server.ws_url}/ws/{room}"
    async with idle_clients(url, WARM, deflate):
        await wait_until(lambda: _count(manager, WARM), what="warm-up connections")
        gc.collect()
        tracemalloc.start(8)
        try:
            before = tracemalloc.take_snapshot()
            async with idle_clients(url, CONNECTIONS, deflate):
                await wait_until(lambda: _count(manager, WARM + CONNECTIONS), 30,
                                 what="idle connections")
                gc.collect()
                after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    stats = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in stats)
    return total / CONNECTIONS, stats[:40]


async def _count(manager: WebSocketManager, n: int) -> bool:
    return len(manager.hub.connections) >= n


def report(per_connection: float, stats: list[Any]) -> str:
    lines = [f"{per_connection:,.0f} bytes per connection"]
    for stat in stats:
        if abs(stat.size_diff) / CONNECTIONS < 40:
            continue
        frames = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}"
                             for f in reversed(list(stat.traceback)[-4:]))
        lines.append(f"{stat.size_diff / CONNECTIONS:8.0f}  {frames}")
    return "\n".join(lines)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("offer", ["plain", "deflate"])
async def test_idle_connection_allocations(uvicorn_ws: str, offer: str) -> None:
    """500 idle connections in one plain room: the server's Python allocations per
    connection stay within :data:`BUDGET` (the failure lists where the bytes went)."""
    with serve(ws=uvicorn_ws, rate_limit=None) as (server, manager):
        per_connection, stats = await traced_per_connection(server, manager, "idle",
                                                            offer == "deflate")
    assert per_connection <= BUDGET[offer], report(per_connection, stats)


@pytest.mark.timeout(120)
async def test_features_of_other_rooms_cost_a_plain_room_nothing(uvicorn_ws: str) -> None:
    """The same with presence, history, typed rooms and their ``authorize`` configured
    for other rooms (:data:`OTHER_ROOMS`)."""
    with serve(ws=uvicorn_ws, rate_limit=None, **OTHER_ROOMS) as (server, manager):
        manager.on_publish("typed-*")(on_note)
        assert manager.room_options("typed-1").authorize is typed_members_only
        assert manager.room_options("idle") == manager.room_options("plain-room")
        per_connection, stats = await traced_per_connection(server, manager, "idle", False)
    assert per_connection <= BUDGET["plain"], report(per_connection, stats)
