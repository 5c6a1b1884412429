"""History rooms on a real Redis: two uvicorn servers (two nodes), real clients, real faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.redis_server import RedisFactory
from tests.support import ThreadServer
from tests.test_history import echo, messages, silent, welcome
from tests.ws_helpers import abort, on_server, recv_json, send_json, serve, wait_until
from wsplugin import BrokerError, History, WebSocketManager
from wsplugin.backends.redis import RedisBroker

pytestmark = [pytest.mark.redis]

Node = tuple[ThreadServer, WebSocketManager]


@contextlib.contextmanager
def nodes(url: str, prefix: str, count: int = 2, **options: Any) -> Iterator[list[Node]]:
    options.setdefault("history", {"h-*": History(size=100, ttl=60)})
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve(backend=url, redis_prefix=prefix, on_message=echo,
                                         **options)) for _ in range(count)]


async def offsets_until(ws: ClientConnection, top: int, seconds: float = 10.0) -> list[int]:
    """Offsets of the messages (and resets, as negative) until ``top`` was seen."""
    seen: list[int] = []
    async with asyncio.timeout(seconds):
        while not seen or abs(seen[-1]) < top:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message":
                seen.append(frame["offset"])
            elif frame["type"] == "reset":
                seen.append(-frame["offset"])
    return seen


async def test_two_nodes_publishing_concurrently_see_one_gap_free_order(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix) as [(sa, ma), (sb, mb)]:
        wa, hello = await welcome(sa, "h-race")
        wb, hello_b = await welcome(sb, "h-race")
        assert (hello["epoch"], hello["offset"]) == (hello_b["epoch"], 0)

        async def storm(manager: WebSocketManager, tag: str) -> None:
            await asyncio.gather(*(manager.broadcast("h-race", f"{tag}{i}") for i in range(150)))

        await asyncio.gather(on_server(sa, storm(ma, "a")), on_server(sb, storm(mb, "b")))
        for _ in range(50):  # clients publish too
            await send_json(wa, {"type": "publish", "data": "ca"})
            await send_json(wb, {"type": "publish", "data": "cb"})
        for ws in (wa, wb):
            got = await offsets_until(ws, 400)
            assert got == list(range(1, 401))
        page = await on_server(sb, mb.history("h-race", since=395, limit=10))
        assert [m.offset for m in page.messages] == [396, 397, 398, 399, 400]
        for ws in (wa, wb):
            await ws.close()


async def test_a_client_recovers_on_the_other_node(redis_url: str, redis_prefix: str) -> None:
    with nodes(redis_url, redis_prefix) as [(sa, ma), (sb, mb)]:
        wa, hello = await welcome(sa, "h-move")
        await on_server(sa, ma.broadcast("h-move", 1))
        assert (await recv_json(wa))["offset"] == 1
        await abort(wa)
        for i in range(2, 7):
            await on_server(sa if i % 2 else sb, (ma if i % 2 else mb).broadcast("h-move", i))
        back, reply = await welcome(sb, "h-move", f"?epoch={hello['epoch']}&offset=1")
        assert (reply["recovered"], reply["offset"]) == (True, 6)
        assert [f["data"] for f in await messages(back, 5)] == [2, 3, 4, 5, 6]
        await on_server(sa, ma.broadcast("h-move", 7))
        assert [f["offset"] for f in await messages(back, 1)] == [7]
        assert await silent(back)
        # joined on a node that had no member yet, with a recovery that is too old
        other, _ = await welcome(sa, "lobby")
        await send_json(other, {"type": "join", "room": "h-move", "epoch": hello["epoch"],
                                "offset": 0, "id": 1})
        joined = await recv_json(other)
        assert (joined["type"], joined["recovered"]) == ("joined", True)
        assert [f["data"] for f in await messages(other, 7)] == list(range(1, 8))
        for ws in (back, other):
            await ws.close()


async def test_flushall_is_a_new_epoch(redis_factory: RedisFactory, redis_prefix: str) -> None:
    server = redis_factory()
    with nodes(server.url, redis_prefix, count=1) as [(sa, ma)]:
        wa, hello = await welcome(sa, "h-flush")
        await on_server(sa, ma.broadcast("h-flush", 1))
        await messages(wa, 1)
        await wa.close()
        server.client().flushall()
        back, reply = await welcome(sa, "h-flush", f"?epoch={hello['epoch']}&offset=1")
        assert reply["recovered"] is False
        await on_server(sa, ma.broadcast("h-flush", 2))
        frame = await recv_json(back)
        # the node notices the new epoch on the first message: a reset, then the message
        if frame["type"] == "reset":
            assert frame["epoch"] != hello["epoch"]
            frame = await recv_json(back)
        assert (frame["type"], frame["offset"], frame["data"]) == ("message", 1, 2)
        page = await on_server(sa, ma.history("h-flush"))
        assert page.position.epoch != hello["epoch"] and page.position.offset == 1
        await back.close()


async def test_redis_down_fails_publishes_visibly_then_recovery_is_exact(
    redis_factory: RedisFactory, redis_prefix: str
) -> None:
    server = redis_factory()
    with nodes(server.url, redis_prefix, count=1) as [(sa, ma)]:
        wa, hello = await welcome(sa, "h-down")
        await send_json(wa, {"type": "publish", "data": "one", "id": 1})
        assert [(await recv_json(wa))["type"] for _ in range(2)] == ["message", "published"]
        await abort(wa)
        server.kill()
        with pytest.raises(BrokerError):
            await on_server(sa, ma.broadcast("h-down", "lost"))
        probe, _ = await welcome(sa, "plain")
        await send_json(probe, {"type": "join", "room": "h-down"})
        await recv_json(probe, 10)
        await send_json(probe, {"type": "publish", "room": "h-down", "data": "x", "id": 9})
        error = await recv_json(probe, 10)
        assert (error["type"], error["code"], error["id"]) == ("error", "publish_failed", 9)
        assert ma.local_stats()["publish_errors"] >= 2
        await probe.close()
        blind, unknown = await welcome(sa, "h-later")  # no position can be read yet
        assert (unknown["epoch"], unknown["offset"]) == ("", 0)
        server.restart()
        await wait_until(lambda: _healthy(sa, ma), 15, "the node to reconnect")
        reset = await recv_json(blind, 10)
        assert (reset["type"], reset["room"], reset["offset"]) == ("reset", "h-later", 0)
        assert len(reset["epoch"]) == 8
        await on_server(sa, ma.broadcast("h-later", "first"))
        assert (await recv_json(blind))["offset"] == 1
        await blind.close()
        await on_server(sa, ma.broadcast("h-down", "two"))
        back, reply = await welcome(sa, "h-down", f"?epoch={hello['epoch']}&offset=1")
        # Redis restarted empty: a new epoch, so no recovery (never a partial one)
        assert reply["recovered"] is False and reply["epoch"] != hello["epoch"]
        assert await silent(back)
        await back.close()


async def _healthy(server: ThreadServer, manager: WebSocketManager) -> bool:
    health = await on_server(server, manager.health())
    return bool(health["status"] == "ok")


async def test_killed_subscription_heals_from_history(
    redis_url: str, redis_prefix: str
) -> None:
    history = {"h-*": History(size=1000)}
    with nodes(redis_url, redis_prefix, history=history) as [(sa, ma), (sb, mb)]:
        wa, _ = await welcome(sa, "h-heal")
        wb, _ = await welcome(sb, "h-heal")

        async def storm() -> None:
            for i in range(300):
                await ma.broadcast("h-heal", i)
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        task = asyncio.run_coroutine_threadsafe(storm(), sa.loop)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        _deafen(sb, mb, 0.3)  # its subscription is killed while it cannot reconnect
        await asyncio.wrap_future(task)
        assert await offsets_until(wb, 300, 20) == list(range(1, 301))
        assert await offsets_until(wa, 300) == list(range(1, 301))
        stats = mb.local_stats()
        assert stats["history_gaps_filled"] >= 1 and stats["history_resets"] == 0
        for ws in (wa, wb):
            await ws.close()


async def test_a_gap_history_cannot_fill_is_a_reset(redis_url: str, redis_prefix: str) -> None:
    history = {"h-*": History(size=5)}
    with nodes(redis_url, redis_prefix, history=history) as [(sa, ma), (sb, mb)]:
        wb, _ = await welcome(sb, "h-lossy")
        for i in range(2):
            await on_server(sa, ma.broadcast("h-lossy", i))
        assert await offsets_until(wb, 2) == [1, 2]
        _deafen(sb, mb, 0.5)
        for i in range(30):
            await on_server(sa, ma.broadcast("h-lossy", i))
        got = await offsets_until(wb, 32, 10)
        assert got == [-27, 28, 29, 30, 31, 32]
        assert mb.local_stats()["history_resets"] == 1
        await on_server(sa, ma.broadcast("h-lossy", "live"))
        assert [f["offset"] for f in await messages(wb, 1)] == [33]
        await wb.close()


def _deafen(server: ThreadServer, manager: WebSocketManager, seconds: float) -> None:
    """Block the node's loop for ``seconds`` and kill its pub/sub connection meanwhile."""
    assert server.loop is not None
    started = threading.Event()

    def block() -> None:
        started.set()
        time.sleep(seconds)

    server.loop.call_soon_threadsafe(block)
    started.wait(5)
    assert _kill_subscription(manager)


def _kill_subscription(manager: WebSocketManager) -> bool:
    """CLIENT KILL the pub/sub connection of one node, found by its local address."""
    broker = manager.broker
    assert isinstance(broker, RedisBroker)
    pubsub = broker.listener.pubsub
    assert pubsub is not None and pubsub.connection is not None
    host, port = pubsub.connection._writer.get_extra_info("sockname")[:2]
    with redis.Redis.from_url(broker.url) as killer:
        return bool(killer.client_kill(f"{host}:{port}"))


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_recovery_of_300_among_1000_live_members(redis_url: str, redis_prefix: str) -> None:
    members = 1000
    history = {"h-*": History(size=500)}
    # live messages may land before the recovery is read: allow 300 plus those
    with nodes(redis_url, redis_prefix, count=1, history=history, rate_limit=None,
               recovery_max_messages=320) as [(sa, ma)]:
        away, hello = await welcome(sa, "h-big")
        await away.close()
        for i in range(300):
            await on_server(sa, ma.broadcast("h-big", i))
        crowd = []
        for start in range(0, members, 100):  # connect in batches
            crowd += await asyncio.gather(*(connect(f"{sa.ws_url}/ws/h-big")
                                            for _ in range(start, min(members, start + 100))))
        for ws in crowd:
            assert json.loads(await ws.recv())["offset"] == 300

        async def live() -> None:
            for i in range(20):
                await ma.broadcast("h-big", f"live{i}")
                await asyncio.sleep(0.01)

        started = time.monotonic()
        task = asyncio.run_coroutine_threadsafe(live(), sa.loop)  # type: ignore[arg-type]
        back, reply = await welcome(sa, "h-big", f"?epoch={hello['epoch']}&offset=0")
        assert reply["recovered"] is True and reply["offset"] >= 300
        got = await offsets_until(back, 320, 30)
        assert got == list(range(1, 321))
        await asyncio.wrap_future(task)

        async def last_of(ws: ClientConnection) -> list[int]:
            return [json.loads(await ws.recv())["offset"] for _ in range(20)]

        seen = await asyncio.wait_for(asyncio.gather(*(last_of(ws) for ws in crowd)), 30)
        assert all(offsets == list(range(301, 321)) for offsets in seen)
        elapsed = time.monotonic() - started
        print(f"1000 members x 20 live + 300 recovered: {elapsed:.2f}s")
        await asyncio.gather(*(ws.close() for ws in [*crowd, back]))


@pytest.mark.parametrize("case", ["trimmed", "expired", "over_limit"])
async def test_redis_recovery_fails_whole(redis_url: str, redis_prefix: str, case: str) -> None:
    history = {"h-*": History(size=5, ttl=0.3 if case == "expired" else 60)}
    with nodes(redis_url, redis_prefix, count=1, history=history,
               recovery_max_messages=3) as [(sa, ma)]:
        ws, hello = await welcome(sa, "h-whole")
        await on_server(sa, ma.broadcast("h-whole", 0))
        await messages(ws, 1)
        await ws.close()
        missed = {"trimmed": 6, "expired": 2, "over_limit": 4}[case]
        for i in range(missed):
            await on_server(sa, ma.broadcast("h-whole", i))
        if case == "expired":
            await asyncio.sleep(0.5)
        back, reply = await welcome(sa, "h-whole", f"?epoch={hello['epoch']}&offset=1")
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (
            False, hello["epoch"], 1 + missed)  # the metadata outlives the messages
        assert await silent(back)
        await back.close()
