"""The delivery engine: bounded queues, slow consumers, drops counted, stalled writers.

These tests use real sockets: a "slow" client is a websockets client that stops reading and
whose kernel receive buffer is shrunk (SO_RCVBUF), so the server's socket really fills up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ThreadServer
from tests.ws_helpers import (
    abort,
    errors_logged,
    on_server,
    open_client,
    recv_json,
    serve,
    wait_until,
)
from wsplugin import Event, WebSocketManager
from wsplugin.delivery.connection import Connection

PAD = "x" * 1000  # ~1 KB per message (clients turn compression off: 1 KB on the wire too)
SNDBUF = 16384  # the server's kernel send buffer per socket (Linux doubles it: 32 KiB)


async def stalled_client(server: ThreadServer, room: str) -> tuple[ClientConnection, str]:
    """A client with a tiny receive buffer that reads its welcome and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = await connect(f"{server.ws_url}/ws/{room}", sock=sock, max_queue=4, compression=None)
    welcome = await recv_json(ws)
    return ws, str(welcome["connection_id"])


async def read_sequence(ws: ClientConnection, count: int) -> list[int]:
    """The ``seq`` of every message frame until ``count`` of them arrived (or the close)."""
    seen: list[int] = []
    while len(seen) < count:
        frame = json.loads(await ws.recv())
        if frame["type"] == "message":
            seen.append(frame["data"]["seq"])
    return seen


async def paced_stream(
    manager: WebSocketManager, room: str, count: int, skip: str, progress: dict[str, int]
) -> None:
    """Broadcast ``count`` messages, keeping pace with the healthy readers only.

    Every 10 messages it waits while some healthy connection (every one except ``skip``)
    still has more than 10 messages queued: the producer follows the healthy clients, and
    never looks at the slow one, whose queue is left to fill up.
    """
    for seq in range(count):
        await manager.broadcast(room, {"seq": seq, "pad": PAD})
        progress["sent"] = seq + 1
        if seq % 10 == 9:
            await asyncio.sleep(0)
            while True:
                backlog = max((c.queue_depth for c in manager.hub.connections.values()
                               if c.id != skip), default=0)
                if backlog <= 10:
                    break
                await asyncio.sleep(0.001)


def connection(manager: WebSocketManager, conn_id: str) -> Connection:
    return manager.hub.connections[conn_id]


async def count_until_closed(ws: ClientConnection) -> tuple[int, int | None]:
    """How many messages a client still finds in its buffers, and the close code after them."""
    received = 0
    code = None
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            received += frame["type"] == "message"
    except Exception:
        code = ws.close_code
    return received, code


@pytest.mark.timeout(120)
async def test_slow_consumer_is_closed_4008_and_the_others_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    healthy_count, total = 50, 2000
    with serve(sndbuf=SNDBUF, max_queue_messages=50, rate_limit=None) as (server, manager), \
            errors_logged(caplog) as errors:
        slow, slow_id = await stalled_client(server, "stream")
        healthy = [(await open_client(server, "stream", compression=None))[0]
                   for _ in range(healthy_count)]
        slow_conn = await on_server(server, asyncio.sleep(0, connection(manager, slow_id)))
        progress = {"sent": 0}
        closed_at: list[dict[str, Any]] = []

        def on_event(event: Event) -> None:
            if event.kind == "slow_close" and event.connection_id == slow_id:
                closed_at.append({"broadcast": progress["sent"],
                                  "written": slow_conn.messages_out - 1,  # minus the welcome
                                  "detail": event.detail})

        manager.events.subscribe(on_event)
        readers = [asyncio.create_task(read_sequence(ws, total)) for ws in healthy]
        started = time.monotonic()
        await on_server(server, paced_stream(manager, "stream", total, slow_id, progress), 90)
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
        elapsed = time.monotonic() - started
        slow_received, slow_code = await count_until_closed(slow)
        stats = await on_server(server, manager.stats())
        room = manager.room_stats()["stream"]
        for ws in healthy:
            await ws.close()

    closed = closed_at[0] if closed_at else {"broadcast": None, "written": None}
    print(f"\nslow-consumer test: {healthy_count} healthy clients x {total} messages of ~1 KB "
          f"in {elapsed:.2f}s; healthy clients received {sorted({len(r) for r in results})} "
          f"messages each, all in order: {all(r == list(range(total)) for r in results)}; "
          f"the slow client was closed when message #{closed['broadcast']} overflowed its "
          f"queue ({closed['written']} messages had been written to its socket by then); "
          f"reading afterwards it got {slow_received} messages then close code {slow_code}; "
          f"dropped: connection {slow_conn.dropped}, room {room['dropped']}, stats "
          f"{stats['dropped']}; slow_closes {stats['slow_closes']}")
    assert all(r == list(range(total)) for r in results)
    assert len(closed_at) == 1 and closed_at[0]["detail"] == "queue overflow"
    assert closed_at[0]["broadcast"] < total
    # when it overflowed, the queue held max_queue_messages=50 and the writer waited on one
    assert closed_at[0]["broadcast"] - closed_at[0]["written"] == 50 + 1
    assert slow_code == 4008
    assert slow_received == slow_conn.messages_out - 1 < total
    assert slow_conn.closed and slow_conn.close_code == 4008
    assert slow_conn.dropped >= 1
    assert stats["dropped"] == slow_conn.dropped == room["dropped"]
    assert stats["slow_closes"] == 1
    assert slow_conn.messages_out - 1 + slow_conn.dropped <= total
    assert errors == []


async def test_every_message_to_a_closed_slow_consumer_is_written_or_counted() -> None:
    """Accounting: each message offered to a connection is written, or counted as dropped.

    When the queue overflows, the connection is closed and its writer task is cancelled
    while it waits for the transport to accept one message (the "in flight" one, already
    taken off the queue). That message is never written, so it must be counted too.
    """
    with serve(sndbuf=SNDBUF, max_queue_messages=5, rate_limit=None) as (server, manager):
        slow, slow_id = await stalled_client(server, "a")

        async def offer_until_closed() -> int:
            conn = connection(manager, slow_id)
            offered = 0
            while not conn.closed:
                await manager.broadcast("a", {"seq": offered, "pad": PAD})
                offered += 1
            return offered

        conn = connection(manager, slow_id)
        offered = await on_server(server, offer_until_closed())
        written = conn.messages_out - 1  # minus the welcome
        assert (await count_until_closed(slow)) == (written, 4008)
        assert conn.close_code == 4008
        assert written + conn.dropped == offered, (
            f"offered {offered}, written {written}, counted as dropped {conn.dropped}: "
            f"{offered - written - conn.dropped} message(s) lost without being counted")


async def test_drop_oldest_keeps_the_slow_client_and_counts_drops() -> None:
    total = 600
    options: dict[str, Any] = {"max_queue_messages": 20, "slow_consumer": "drop_oldest",
                               "rate_limit": None}
    with serve(sndbuf=SNDBUF, **options) as (server, manager):
        slow, slow_id = await stalled_client(server, "stream")
        healthy, _ = await open_client(server, "stream", compression=None)
        reader = asyncio.create_task(read_sequence(healthy, total))
        await on_server(server, paced_stream(manager, "stream", total, slow_id, {"sent": 0}), 60)
        assert await asyncio.wait_for(reader, 30) == list(range(total))
        slow_conn = connection(manager, slow_id)
        stats = await on_server(server, manager.stats())
        infos = {i.id: i for i in await on_server(server, manager.connections())}
        assert slow_id in infos and not slow_conn.closed
        assert infos[slow_id].dropped == slow_conn.dropped > 0
        assert infos[slow_id].queue_depth == 20
        assert stats["dropped"] == slow_conn.dropped
        assert stats["slow_closes"] == 0
        assert manager.room_stats()["stream"]["dropped"] == slow_conn.dropped
        written = slow_conn.messages_out - 1
        in_flight = total - written - slow_conn.dropped - slow_conn.queue_depth
        assert in_flight in (0, 1)  # a write the transport has not taken yet

        seqs: list[int] = []
        while not seqs or seqs[-1] != total - 1:  # the slow one now reads what survived
            frame = json.loads(await asyncio.wait_for(slow.recv(), 10))
            seqs.append(frame["data"]["seq"])
        assert len(seqs) == written + in_flight + 20
        assert seqs == sorted(seqs)
        assert seqs[:written] == list(range(written))
        assert seqs[-20:] == list(range(total - 20, total))  # the newest were kept
        await slow.close()
        await healthy.close()


async def test_stalled_writer_is_closed_by_the_heartbeat() -> None:
    options: dict[str, Any] = {"heartbeat_interval": 0.2, "heartbeat_timeout": 0.5,
                               "max_queue_messages": 100_000, "max_queue_bytes": 2**30,
                               "rate_limit": None}
    with serve(sndbuf=SNDBUF, **options) as (server, manager):
        slow, slow_id = await stalled_client(server, "stream")
        healthy, _ = await open_client(server, "stream", compression=None)

        async def fill() -> int:
            conn = connection(manager, slow_id)
            sent = 0
            while conn.queue_depth < 50 and sent < 20_000:
                await manager.broadcast("stream", {"seq": sent, "pad": PAD})
                sent += 1
            return sent

        sent = await on_server(server, fill())
        assert connection(manager, slow_id).queue_depth >= 50

        async def slow_gone() -> bool:
            ids = [i.id for i in await on_server(server, manager.connections())]
            return slow_id not in ids

        await wait_until(slow_gone, 10, "the heartbeat to close the stalled writer")
        stats = await on_server(server, manager.stats())
        assert stats["slow_closes"] == 1
        assert stats["dropped"] >= 50  # what was queued is counted, never silent
        received = await read_sequence(healthy, sent)
        assert received == list(range(sent))
        assert (await count_until_closed(slow))[1] == 4008
        await healthy.close()


async def test_close_stalled_leaves_healthy_idle_connections_alone() -> None:
    with serve(heartbeat_interval=0.1, heartbeat_timeout=0.2) as (server, manager):
        ws, conn_id = await open_client(server, "a")
        await asyncio.sleep(0.6)  # several heartbeats while idle
        assert await on_server(server, asyncio.sleep(0, manager.close_stalled())) == 0
        assert [i.id for i in await on_server(server, manager.connections())] == [conn_id]
        await on_server(server, manager.broadcast("a", "alive"))
        assert (await recv_json(ws))["data"] == "alive"
        await ws.close()


async def test_the_heartbeat_looks_only_at_connections_that_pushed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With many idle connections the heartbeat does not walk them all (at 20,000 that
    held the event loop for milliseconds every interval)."""
    looked: list[str] = []
    original = Connection.stalled_for

    def counting(conn: Connection, now: float) -> float:
        looked.append(conn.id)
        return original(conn, now)

    monkeypatch.setattr(Connection, "stalled_for", counting)
    with serve() as (server, manager):
        clients = [await open_client(server, "a") for _ in range(30)]
        assert await on_server(server, asyncio.sleep(0, manager.close_stalled())) == 0
        assert looked == [] and not manager.draining
        for ws, _ in clients:
            await ws.close()


async def test_oversized_message_for_the_byte_bound() -> None:
    """A message bigger than max_queue_bytes, queued behind a stall, is a counted drop."""
    options: dict[str, Any] = {"max_queue_bytes": 8192, "slow_consumer": "drop_oldest",
                               "rate_limit": None}
    with serve(sndbuf=SNDBUF, **options) as (server, manager):
        slow, slow_id = await stalled_client(server, "a")

        async def fill_then_big() -> tuple[int, int]:
            conn = connection(manager, slow_id)
            while conn.queue_depth == 0:
                await manager.broadcast("a", {"pad": PAD})
            before = conn.dropped
            await manager.broadcast("a", {"pad": "y" * 10_000})
            return before, conn.dropped

        before, after = await on_server(server, fill_then_big())
        assert after == before + 1
        assert not connection(manager, slow_id).closed
        assert (await on_server(server, manager.stats()))["dropped"] == after
        await abort(slow)
