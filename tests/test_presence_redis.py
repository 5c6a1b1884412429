"""Presence across nodes through a real Redis: each user counted once, each change announced
once, and the users of a node killed with ``kill -9`` leave once, after ``registry_ttl`` and
the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ThreadServer, subprocess_server
from tests.test_presence import apply, by_header, diffs_until_quiet
from tests.ws_helpers import make_app, on_server, recv_json, wait_until
from wsplugin import Presence, WebSocketManager
from wsplugin.presence import PresenceStats

pytestmark = [pytest.mark.redis]

GRACE = 0.5
TTL = 2.0


@contextlib.contextmanager
def nodes(redis_url: str, prefix: str, count: int = 2
          ) -> Iterator[list[tuple[ThreadServer, WebSocketManager]]]:
    with contextlib.ExitStack() as stack:
        found = []
        for _ in range(count):
            app, manager = make_app(
                backend=redis_url, redis_prefix=prefix, registry_ttl=TTL,
                authenticate=by_header, presence={"chat-*": Presence(grace=GRACE)},
                presence_interval=0.1)
            found.append((stack.enter_context(ThreadServer(app)), manager))
        yield found


async def join(url: str, user: str | None, room: str = "chat-1"
               ) -> tuple[ClientConnection, dict[str, Any]]:
    headers = {} if user is None else {"x-user": user}
    ws = await connect(f"{url}/ws/{room}", additional_headers=headers)
    assert (await recv_json(ws))["type"] == "welcome"
    snapshot = await recv_json(ws)
    assert snapshot["type"] == "presence", snapshot
    return ws, snapshot


async def test_a_user_on_two_nodes_counts_once_and_changes_are_announced_once(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix) as [(a, manager_a), (b, _)]:
        watcher_a, _ = await join(a.ws_url, "watch-a")
        watcher_b, _ = await join(b.ws_url, "watch-b")
        await asyncio.gather(diffs_until_quiet(watcher_a), diffs_until_quiet(watcher_b))
        ann_a, _ = await join(a.ws_url, "ann")
        ann_b, snapshot = await join(b.ws_url, "ann")
        assert snapshot["users"]["ann"]["connections"] == 2
        assert snapshot["count"] == {"users": 3, "connections": 4}
        seen = await asyncio.gather(diffs_until_quiet(watcher_a), diffs_until_quiet(watcher_b))
        for diffs in seen:  # one join, whichever node saw it first
            assert [d["joins"] for d in diffs] == [{"ann": {"info": {"name": "Ann"}}}]
        stats = await on_server(a, manager_a.presence_stats("chat-1"))
        assert stats == PresenceStats(users=3, connections=4)
        await ann_a.close()  # still on node b: nothing
        assert await diffs_until_quiet(watcher_b) == []
        await ann_b.close()
        seen = await asyncio.gather(diffs_until_quiet(watcher_a), diffs_until_quiet(watcher_b))
        for diffs in seen:
            assert [d["leaves"] for d in diffs] == [{"ann": {}}]
        users = await on_server(a, manager_a.presence("chat-1"))
        assert set(users) == {"watch-a", "watch-b"}
        for ws in (watcher_a, watcher_b):
            await ws.close()


async def test_the_users_of_a_killed_node_leave_once(redis_url: str, redis_prefix: str) -> None:
    env = {"WSPLUGIN_BACKEND": redis_url, "WSPLUGIN_REDIS_PREFIX": redis_prefix,
           "WSPLUGIN_REGISTRY_TTL": str(TTL),
           "WSPLUGIN_PRESENCE": f'{{"chat-*": {{"grace": {GRACE}}}}}'}
    with nodes(redis_url, redis_prefix, 1) as [(b, manager_b)], \
            subprocess_server("tests.apps.presence_app:app", env=env) as (proc, port):
        watcher, _ = await join(b.ws_url, "watcher")
        state: dict[str, Any] = {}
        ann, _ = await join(f"ws://127.0.0.1:{port}", "ann")
        bob, _ = await join(f"ws://127.0.0.1:{port}", "bob")
        for diff in await diffs_until_quiet(watcher):
            apply(state, diff)
        assert set(state) == {"watcher", "ann", "bob"}
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        diffs = await diffs_until_quiet(watcher, quiet=TTL + GRACE + 3 * max(0.5, TTL / 3))
        took = time.monotonic() - killed
        leaves = [user for diff in diffs for user in diff["leaves"]]
        assert sorted(leaves) == ["ann", "bob"]  # once each
        assert took < 2 * (TTL + GRACE) + 10
        users = await on_server(b, manager_b.presence("chat-1"))
        assert set(users) == {"watcher"}
        with contextlib.suppress(Exception):
            await ann.close()
            await bob.close()
        await watcher.close()


async def test_keys_of_an_empty_room_go(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as redis

    with nodes(redis_url, redis_prefix, 1) as [(a, _)]:
        ws, _ = await join(a.ws_url, "ann")
        await ws.close()
        client = redis.from_url(redis_url)
        try:
            async def no_room_keys() -> bool:
                keys = await client.keys(f"{redis_prefix}:pres:{{chat-1}}:*")
                return not keys
            await wait_until(no_room_keys, 10, "the room's presence keys to go")
        finally:
            await client.aclose()
