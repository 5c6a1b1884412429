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


async def test_a_lone_message_is_written_during_the_broadcast(uvicorn_ws: str) -> None:
    """One frame per connection per iteration: nothing is held for the end of it."""
    with serve(ws=uvicorn_ws) as (server, manager):
        ws, conn_id = await open_client(server, "r", compression=None)
        conn = manager.hub.connections[conn_id]
        writer = conn.frames
        assert isinstance(writer, UvicornWriter)

        async def broadcast_and_look() -> tuple[bytes | None, int]:
            await manager.broadcast("r", {"n": 1})
            return writer.held, conn.messages_out  # before the iteration ends

        for n in range(3):
            assert await on_server(server, broadcast_and_look()) == (None, 2 + n)  # + welcome
            assert (await recv_json(ws))["data"] == {"n": 1}
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

        async def burst(first: int, count: int) -> int:
            for seq in range(first, first + count):  # no await suspends: one iteration
                await manager.broadcast("r", {"seq": seq})
            return counting.writes  # before the iteration ends

        writes = []
        for first in (0, 5, 10):
            await on_server(server, burst(first, 5))
            writes.append(counting.writes)
        # the first burst finds no burst before it: its first frame goes at once, the
        # other four in one write; the bursts after it, one write each
        assert writes == [2, 3, 4]
        assert not manager.flushes.direct
        await asyncio.sleep(0.2)  # the server idles far longer than a round takes
        assert await on_server(server, burst(15, 1)) == 4  # held after a burst, ...
        assert counting.writes == 5
        assert manager.flushes.direct  # ... and that round found the server idle before it
        await asyncio.sleep(0.2)
        assert await on_server(server, burst(16, 1)) == 6  # written at once
        assert await on_server(server, burst(17, 2)) == 7  # the next burst: first at once
        assert counting.writes == 8  # and the other held
        assert not manager.flushes.direct
        seen = [(await recv_json(ws))["data"]["seq"] for _ in range(19)]
        assert seen == list(range(19))
        assert manager.counters.messages_out == 1 + 19  # the welcome, then these
        await ws.close()
