"""The fast path: one frame per message written straight to uvicorn's transport."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from tests.support import ThreadServer
from tests.ws_helpers import (
    close_code,
    make_app,
    on_server,
    open_client,
    recv_json,
    serve,
    uvicorn_ws,
    wait_until,
)
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.uvicorn_writer import FRAME_KEY, UvicornWriter, encode_frame

__all__ = ["uvicorn_ws"]  # the fixture: the real-server tests run under both protocols


def fast(conn: Connection) -> bool:
    """The connection writes through the uvicorn fast path."""
    return isinstance(conn.frames, UvicornWriter)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frames_match_the_websockets_library(size: int) -> None:
    text = ("é" * size)[:size]
    message: dict[str, object] = {"type": "websocket.send", "text": text}
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert encode_frame(message) == expected
    assert message[FRAME_KEY] == expected  # built once, cached on the shared message


@pytest.mark.parametrize("size", [0, 125, 126, 65536])
def test_binary_frames_match_the_websockets_library(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])
    assert encode_frame({"type": "websocket.send", "bytes": data}) == expected


async def test_plain_and_compressed_connections_both_take_the_fast_path(
    uvicorn_ws: str,
) -> None:
    with serve(ws=uvicorn_ws) as (server, manager):
        plain, plain_id = await open_client(server, "r", compression=None)
        deflate, deflate_id = await open_client(server, "r")  # negotiates permessage-deflate
        assert fast(manager.hub.connections[plain_id])
        assert fast(manager.hub.connections[deflate_id])  # see tests/test_deflate.py
        for data in ({"n": 1}, {"big": "ü" * 70000}, b"\x00\xff" * 100):
            await on_server(server, manager.broadcast("r", data))
            got_plain, got_deflate = await plain.recv(), await deflate.recv()
            assert got_plain == got_deflate
            if isinstance(data, bytes):
                assert got_plain == data
            else:
                assert json.loads(got_plain)["data"] == data
        await plain.close()
        await deflate.close()


async def test_order_survives_back_pressure(uvicorn_ws: str) -> None:
    """Fast writes, then a paused transport (queue and writer task), then fast writes again."""
    with serve(sndbuf=16384, ws=uvicorn_ws, max_queue_messages=5000,
               max_queue_bytes=64 * 2**20) as (server, manager):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        ws = await connect(f"{server.ws_url}/ws/r", sock=sock, compression=None, max_queue=4)
        welcome = await recv_json(ws)
        conn = manager.hub.connections[welcome["connection_id"]]
        assert fast(conn)
        assert conn.outbox.items == ()  # no queue is held before one is needed
        pad = "x" * 1000
        for seq in range(400):  # ~400 KB: far more than the socket buffers hold
            await on_server(server, manager.broadcast("r", {"seq": seq, "pad": pad}))
        assert conn.queue_depth > 0  # the client is not reading: the rest waits in the queue
        seen = [(await recv_json(ws))["data"]["seq"] for _ in range(400)]
        assert seen == list(range(400))
        await asyncio.sleep(0.1)
        await on_server(server, manager.broadcast("r", {"seq": 400}))
        assert (await recv_json(ws))["data"]["seq"] == 400
        assert conn.dropped == 0
        assert conn.outbox.items == ()  # and none once it drained
        await ws.close()


async def test_a_message_sent_just_before_a_kick_arrives_before_the_close(
    uvicorn_ws: str,
) -> None:
    with serve(ws=uvicorn_ws) as (server, manager):
        ws, conn_id = await open_client(server, "r", compression=None)
        assert fast(manager.hub.connections[conn_id])

        async def send_then_kick() -> None:
            await manager.send(conn_id, {"last": "words"})
            await manager.kick(conn_id, reason="bye")

        await on_server(server, send_then_kick())
        assert (await recv_json(ws))["data"] == {"last": "words"}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4000
        assert ws.close_reason == "bye"
        assert manager.hub.connections.get(conn_id) is None
        assert manager.counters.dropped == 0


async def test_user_owned_routes_use_the_fast_path_too(uvicorn_ws: str) -> None:
    app, manager = make_app()
    seen: list[bool] = []

    @app.websocket("/own")
    async def own(websocket: WebSocket) -> None:
        async with manager.connect(websocket, rooms=["r"]) as conn:
            seen.append(fast(conn.connection))
            async for _ in conn:
                pass

    with ThreadServer(app, ws=uvicorn_ws) as server:
        ws = await connect(f"{server.ws_url}/own", compression=None)
        async def entered() -> bool:
            return bool(seen)

        await wait_until(entered, what="the route to enter manager.connect")
        assert seen == [True]
        for seq in range(3):
            await on_server(server, manager.broadcast("r", {"seq": seq}))
        assert [(await recv_json(ws))["data"]["seq"] for _ in range(3)] == [0, 1, 2]
        await ws.close()


class CountingTransport:
    """The connection's transport, counting its writes (one per syscall the server makes)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())


async def test_a_lone_publish_is_written_in_one_pass_at_the_end_of_the_iteration(
    uvicorn_ws: str,
) -> None:
    """Nothing is held for it per member: it waits, once, in the manager's flush queue."""
    with serve(ws=uvicorn_ws) as (server, manager):
        ws, conn_id = await open_client(server, "r", compression=None)
        conn = manager.hub.connections[conn_id]
        writer = conn.frames
        assert isinstance(writer, UvicornWriter)
        counting = CountingTransport(writer.transport)
        writer.transport = counting

        async def broadcast_and_look() -> tuple[bytes | None, int, bool]:
            assert await manager.broadcast("r", {"n": 1}) == 1
            return writer.held, conn.messages_out, manager.flushes.pending is not None

        for n in range(3):
            held, sent, pending = await on_server(server, broadcast_and_look())
            assert (held, sent, pending) == (None, 1 + n, True)  # the welcome, then these
            assert counting.writes == 1 + n  # written once the iteration ended
            assert (await recv_json(ws))["data"] == {"n": 1}
        assert conn.messages_out == 4
        await ws.close()


async def test_a_burst_in_one_iteration_is_written_once_per_connection(
    uvicorn_ws: str,
) -> None:
    with serve(ws=uvicorn_ws) as (server, manager):
        ws, conn_id = await open_client(server, "r", compression=None)
        writer = manager.hub.connections[conn_id].frames
        assert isinstance(writer, UvicornWriter)
        counting = CountingTransport(writer.transport)
        writer.transport = counting

        async def burst(first: int, count: int) -> None:
            for seq in range(first, first + count):  # no await suspends: one iteration
                await manager.broadcast("r", {"seq": seq})

        writes = []
        for first, count in ((0, 5), (5, 1), (6, 2), (8, 5)):
            await on_server(server, burst(first, count))
            writes.append(counting.writes)
        assert writes == [1, 2, 3, 4]
        seen = [(await recv_json(ws))["data"]["seq"] for _ in range(13)]
        assert seen == list(range(13))
        assert manager.counters.messages_out == 1 + 13  # the welcome, then these
        await ws.close()


async def test_what_follows_a_lone_publish_in_its_iteration_comes_after_it(
    uvicorn_ws: str,
) -> None:
    """A message to one member, then a kick, after a broadcast in the same iteration."""
    with serve(ws=uvicorn_ws) as (server, manager):
        first, first_id = await open_client(server, "r", compression=None)
        second, second_id = await open_client(server, "r", compression=None)

        async def publish_send_kick() -> None:
            await manager.broadcast("r", {"n": "all"})
            await manager.send(first_id, {"n": "you"})
            await manager.kick(first_id, reason="bye")

        await on_server(server, publish_send_kick())
        assert [(await recv_json(first))["data"] for _ in range(2)] == [{"n": "all"},
                                                                       {"n": "you"}]
        assert await close_code(first) == 4000
        assert (await recv_json(second))["data"] == {"n": "all"}

        async def send_then_publish() -> None:  # the other order: nothing is deferred
            await manager.send(second_id, {"n": "you"})
            await manager.broadcast("r", {"n": "all"})

        await on_server(server, send_then_publish())
        assert [(await recv_json(second))["data"] for _ in range(2)] == [{"n": "you"},
                                                                        {"n": "all"}]
        assert manager.counters.dropped == 0
        await second.close()


async def test_a_member_that_leaves_before_its_lone_publish_is_written_counts_a_drop(
    uvicorn_ws: str,
) -> None:
    with serve(ws=uvicorn_ws) as (server, manager):
        ws, conn_id = await open_client(server, "r", compression=None)
        conn = manager.hub.connections[conn_id]

        async def publish_then_lose_it() -> None:
            await manager.broadcast("r", {"n": 1})
            conn.disconnected(1001)  # as the reader does when the client goes away

        await on_server(server, publish_then_lose_it())
        assert conn.dropped == 1
        assert manager.counters.dropped == 1
        await ws.close()
