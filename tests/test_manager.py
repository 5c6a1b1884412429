"""WebSocketManager's public API against a real server with real websocket clients."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support import ThreadServer
from tests.ws_helpers import (
    close_code,
    on_server,
    open_client,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import ConnectionInfo, Event, WebSocketManager


async def next_message(ws: ClientConnection) -> Any:
    """The data of the next ``message`` frame (bytes for a binary frame)."""
    while True:
        raw = await ws.recv()
        if isinstance(raw, bytes):
            return raw
        frame = json.loads(raw)
        if frame["type"] == "message":
            return frame["data"]


async def nothing_else(server: ThreadServer, manager: WebSocketManager, ws: ClientConnection,
                       conn_id: str) -> None:
    """Prove ``ws`` got no message so far: a marker sent now must be the next one it sees."""
    await on_server(server, manager.send(conn_id, "marker"))
    assert await next_message(ws) == "marker"


async def test_room_isolation() -> None:
    with serve(client_publish=True) as (server, manager):
        a1, _ = await open_client(server, "a")
        a2, _ = await open_client(server, "a")
        b1, b1_id = await open_client(server, "b")
        assert await on_server(server, manager.broadcast("a", {"for": "a"})) == 2
        assert await next_message(a1) == {"for": "a"}
        assert await next_message(a2) == {"for": "a"}
        await send_json(a1, {"type": "publish", "data": "from a1"})
        assert await next_message(a2) == "from a1"
        await nothing_else(server, manager, b1, b1_id)
        assert await on_server(server, manager.broadcast("nobody-here", 1)) == 0
        for ws in (a1, a2, b1):
            await ws.close()


async def test_multi_room_join_and_leave() -> None:
    with serve() as (server, manager):
        ws, conn_id = await open_client(server, "home")
        for room in ("x", "y"):
            await send_json(ws, {"type": "join", "room": room})
            assert await recv_json(ws) == {"type": "joined", "room": room}
        assert await on_server(server, manager.rooms()) == {"home": 1, "x": 1, "y": 1}
        infos = await on_server(server, manager.connections())
        assert infos[0].rooms == ("home", "x", "y")
        for room in ("home", "x", "y"):
            await on_server(server, manager.broadcast(room, room))
            frame = await recv_type(ws, "message")
            assert (frame["room"], frame["data"], frame["sender"]) == (room, room, None)
        await send_json(ws, {"type": "leave", "room": "x"})
        assert await recv_json(ws) == {"type": "left", "room": "x"}
        assert await on_server(server, manager.rooms()) == {"home": 1, "y": 1}
        assert await on_server(server, manager.broadcast("x", "gone")) == 0
        await on_server(server, manager.broadcast("y", "still"))
        assert await next_message(ws) == "still"
        assert [i.id for i in await on_server(server, manager.connections("y"))] == [conn_id]
        assert await on_server(server, manager.connections("x")) == []
        await ws.close()


async def test_send_to_one_connection() -> None:
    with serve() as (server, manager):
        one, one_id = await open_client(server, "a")
        other, other_id = await open_client(server, "a")
        assert await on_server(server, manager.send(one_id, {"private": True})) is True
        frame = await recv_json(one)
        assert frame == {"type": "message", "room": None, "data": {"private": True},
                         "sender": None}
        await nothing_else(server, manager, other, other_id)
        assert await on_server(server, manager.send("no-such-id", 1)) is False
        await one.close()
        await other.close()


async def test_kick_closes_with_4000_and_reason() -> None:
    with serve() as (server, manager):
        ws, conn_id = await open_client(server, "a")
        stay, _ = await open_client(server, "a")
        assert await on_server(server, manager.kick(conn_id, reason="spamming")) is True
        assert await close_code(ws) == 4000
        assert ws.close_reason == "spamming"
        ids = [i.id for i in await on_server(server, manager.connections())]
        assert conn_id not in ids and len(ids) == 1
        assert await on_server(server, manager.rooms()) == {"a": 1}
        assert await on_server(server, manager.kick(conn_id)) is False
        assert await on_server(server, manager.kick("no-such-id")) is False
        await stay.close()


async def test_binary_broadcast_arrives_as_one_binary_frame() -> None:
    payload = bytes(range(256)) * 10
    with serve() as (server, manager):
        ws, conn_id = await open_client(server, "a")
        assert await on_server(server, manager.broadcast("a", payload)) == 1
        assert await ws.recv() == payload
        assert await on_server(server, manager.send(conn_id, b"\x00one")) is True
        assert await ws.recv() == b"\x00one"
        await on_server(server, manager.broadcast_all(bytearray(b"all")))
        assert await ws.recv() == b"all"
        await ws.close()


async def test_broadcast_all_reaches_every_room() -> None:
    with serve() as (server, manager):
        clients = [(await open_client(server, room))[0] for room in ("a", "b", "c")]
        assert await on_server(server, manager.broadcast_all({"to": "all"})) == 3
        for ws in clients:
            assert await recv_json(ws) == {"type": "message", "room": None,
                                           "data": {"to": "all"}, "sender": None}
            await ws.close()


async def test_exclude() -> None:
    with serve() as (server, manager):
        c1, id1 = await open_client(server, "a")
        c2, id2 = await open_client(server, "a")
        c3, id3 = await open_client(server, "a")
        assert await on_server(server, manager.broadcast("a", "not 1", exclude=id1)) == 2
        assert await on_server(server, manager.broadcast("a", "only 3", exclude=[id1, id2])) == 1
        assert await next_message(c2) == "not 1"
        assert await next_message(c3) == "not 1"
        assert await next_message(c3) == "only 3"
        await nothing_else(server, manager, c1, id1)
        await nothing_else(server, manager, c2, id2)
        for ws in (c1, c2, c3):
            await ws.close()
        assert id3


async def test_echo_to_sender_false() -> None:
    with serve(echo_to_sender=False, client_publish=True) as (server, manager):
        sender, sender_id = await open_client(server, "a")
        other, _ = await open_client(server, "a")
        await send_json(sender, {"type": "publish", "data": "hello"})
        frame = await recv_type(other, "message")
        assert (frame["data"], frame["sender"]) == ("hello", sender_id)
        await nothing_else(server, manager, sender, sender_id)
        await sender.close()
        await other.close()


async def test_echo_to_sender_true_by_default() -> None:
    with serve(client_publish=True) as (server, _):
        sender, sender_id = await open_client(server, "a")
        await send_json(sender, {"type": "publish", "data": "hello"})
        frame = await recv_type(sender, "message")
        assert (frame["data"], frame["sender"]) == ("hello", sender_id)
        await sender.close()


async def test_join_and_leave_by_id_from_the_server() -> None:
    with serve() as (server, manager):
        ws, conn_id = await open_client(server, "a")
        assert await on_server(server, manager.join(conn_id, "z")) is True
        assert await recv_json(ws) == {"type": "joined", "room": "z"}
        await on_server(server, manager.broadcast("z", "in z"))
        assert await next_message(ws) == "in z"
        assert await on_server(server, manager.leave(conn_id, "z")) is True
        assert await recv_json(ws) == {"type": "left", "room": "z"}
        assert await on_server(server, manager.rooms()) == {"a": 1}
        assert await on_server(server, manager.join("no-such-id", "z")) is False
        assert await on_server(server, manager.leave("no-such-id", "z")) is False
        await ws.close()


async def test_server_join_respects_max_rooms() -> None:
    with serve(max_rooms_per_connection=2) as (server, manager):
        ws, conn_id = await open_client(server, "a")
        assert await on_server(server, manager.join(conn_id, "b")) is True
        assert await on_server(server, manager.join(conn_id, "c")) is False
        assert await on_server(server, manager.rooms()) == {"a": 1, "b": 1}
        await ws.close()


async def test_bad_arguments_raise() -> None:
    with serve() as (server, manager):
        with pytest.raises(ValueError, match="room"):
            await on_server(server, manager.broadcast("bad room", 1))
        with pytest.raises(ValueError, match="room"):
            await on_server(server, manager.connections("bad room"))
        with pytest.raises(TypeError, match="JSON"):
            await on_server(server, manager.broadcast("a", {1, 2}))
        with pytest.raises(TypeError, match="JSON"):
            await on_server(server, manager.broadcast("a", float("nan")))


async def test_connection_info() -> None:
    with serve(authenticate=lambda ws: {"user": "ann"}, client_publish=True) as (server, manager):
        before = time.time()
        ws, conn_id = await open_client(server, "a", user_agent_header="test-agent/1.0")
        await send_json(ws, {"type": "publish", "data": "x" * 100})
        await recv_type(ws, "message")
        (info,) = await on_server(server, manager.connections())
        assert isinstance(info, ConnectionInfo)
        assert info.id == conn_id
        assert info.identity == str({"user": "ann"})
        assert info.rooms == ("a",)
        assert info.remote.startswith("127.0.0.1:")
        assert info.user_agent == "test-agent/1.0"
        assert before - 1 <= info.connected_at <= time.time()
        assert info.messages_in == 1 and info.bytes_in > 100
        assert info.messages_out == 2 and info.bytes_out > 100  # welcome + the message
        assert (info.queue_depth, info.dropped) == (0, 0)
        assert info.to_dict()["rooms"] == ["a"]
        await ws.close()


async def test_stats_and_room_stats() -> None:
    with serve(client_publish=True) as (server, manager):
        keys = {"connections", "rooms", "messages_in", "messages_out", "bytes_out", "dropped",
                "slow_closes"}
        stats = await on_server(server, manager.stats())
        assert keys <= set(stats)
        assert stats["connections"] == 0
        c1, _ = await open_client(server, "a")
        c2, _ = await open_client(server, "a")
        await send_json(c1, {"type": "publish", "data": "hi"})
        await recv_type(c1, "message")
        await recv_type(c2, "message")
        stats = await on_server(server, manager.stats())
        assert (stats["connections"], stats["rooms"]) == (2, 1)
        assert stats["messages_in"] == 1
        assert stats["messages_out"] == 4  # two welcomes, two deliveries
        assert stats["bytes_out"] > 0
        assert (stats["dropped"], stats["slow_closes"]) == (0, 0)
        assert manager.room_stats() == {"a": {"members": 2, "messages": 1, "dropped": 0}}
        await c1.close()
        await c2.close()


async def test_lifecycle_events() -> None:
    with serve() as (server, manager):
        events: list[Event] = []
        manager.events.subscribe(events.append)
        ws, conn_id = await open_client(server, "a")
        await on_server(server, manager.join(conn_id, "b"))
        await recv_json(ws)
        await on_server(server, manager.leave(conn_id, "b"))
        await recv_json(ws)
        await on_server(server, manager.broadcast("a", 1))
        await on_server(server, manager.kick(conn_id, reason="bye"))
        assert await close_code(ws) == 4000

        async def disconnected() -> bool:
            return any(e.kind == "disconnected" for e in events)

        await wait_until(disconnected, 5, "the disconnected event")
        kinds = [(e.kind, e.room) for e in events if e.connection_id in (conn_id, None)]
        assert kinds == [("connected", None), ("joined", "a"), ("joined", "b"), ("left", "b"),
                         ("broadcast", "a"), ("kicked", None), ("disconnected", None)]
        assert [e.detail for e in events if e.kind == "kicked"] == ["bye"]
        assert {e.node for e in events} == {manager.node_id}
