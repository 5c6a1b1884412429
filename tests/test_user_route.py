"""User-owned routes: ``async with manager.connect(websocket, rooms=..., identity=...)``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ThreadServer
from tests.ws_helpers import (
    close_code,
    make_app,
    on_server,
    open_client,
    recv_json,
    recv_type,
    send_json,
    wait_until,
)
from wsplugin import WebSocketManager, WSManager


def chat_app() -> tuple[FastAPI, WebSocketManager]:
    app, manager = make_app(client_publish=True)

    @app.websocket("/chat/{room}")
    async def chat(websocket: WebSocket, room: str, ws_manager: WSManager) -> None:
        if websocket.query_params.get("accept_first"):
            await websocket.accept()
        identity = websocket.query_params.get("user")
        try:
            async with ws_manager.connect(websocket, rooms=[room], identity=identity) as conn:
                await conn.send({"hello": conn.id, "rooms": sorted(conn.rooms)})
                async for data in conn:
                    if data == "boom":
                        raise RuntimeError("boom")
                    if data == "bye":
                        break
                    if data == "join extra":
                        await conn.join("extra")
                        continue
                    if isinstance(data, bytes):
                        await conn.send(b"echo:" + data)
                    else:
                        await ws_manager.broadcast(room, {"said": data}, sender=conn.id)
        except RuntimeError:
            pass  # the block already closed the socket with 1011

    return app, manager


@pytest.fixture
def server() -> Iterator[tuple[ThreadServer, WebSocketManager]]:
    app, manager = chat_app()
    with ThreadServer(app) as running:
        yield running, manager


async def open_chat(server: ThreadServer, path: str) -> tuple[ClientConnection, str]:
    ws = await connect(f"{server.ws_url}/chat/{path}")
    hello = await recv_json(ws)
    assert hello["type"] == "message"
    return ws, str(hello["data"]["hello"])


async def test_user_route_receives_broadcasts_and_is_listed(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, manager = server
    ws, conn_id = await open_chat(srv, "lobby?user=ann")
    infos = await on_server(srv, manager.connections("lobby"))
    assert [(i.id, i.identity, i.rooms) for i in infos] == [(conn_id, "ann", ("lobby",))]
    assert await on_server(srv, manager.broadcast("lobby", {"n": 1})) == 1
    assert await recv_json(ws) == {"type": "message", "room": "lobby", "data": {"n": 1},
                                   "sender": None}
    assert await on_server(srv, manager.send(conn_id, "direct")) is True
    assert (await recv_json(ws))["data"] == "direct"
    await ws.close()


async def test_async_for_yields_frames_and_conn_send_works(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, _ = server
    ws, conn_id = await open_chat(srv, "lobby")
    await ws.send("hello there")
    frame = await recv_json(ws)
    assert (frame["data"], frame["sender"]) == ({"said": "hello there"}, conn_id)
    await ws.send(b"\x00\x01")
    assert await ws.recv() == b"echo:\x00\x01"
    await ws.close()


async def test_user_route_and_managed_endpoint_share_rooms(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, manager = server
    custom, custom_id = await open_chat(srv, "shared")
    managed, managed_id = await open_client(srv, "shared")
    await send_json(managed, {"type": "publish", "data": "from managed"})
    frame = await recv_json(custom)
    assert (frame["data"], frame["sender"]) == ("from managed", managed_id)
    echo = await recv_type(managed, "message")  # its own message comes back first
    assert (echo["data"], echo["sender"]) == ("from managed", managed_id)
    await custom.send("from custom")
    frame = await recv_type(managed, "message")
    assert (frame["data"], frame["sender"]) == ({"said": "from custom"}, custom_id)
    assert await on_server(srv, manager.rooms()) == {"shared": 2}
    await custom.close()
    await managed.close()


async def test_join_from_the_route(server: tuple[ThreadServer, WebSocketManager]) -> None:
    srv, manager = server
    ws, _ = await open_chat(srv, "lobby")
    await ws.send("join extra")
    assert await recv_json(ws) == {"type": "joined", "room": "extra"}
    assert await on_server(srv, manager.rooms()) == {"lobby": 1, "extra": 1}
    await ws.close()


async def test_leaving_the_block_closes_1000_and_cleans_up(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, manager = server
    ws, _ = await open_chat(srv, "lobby")
    await ws.send("bye")
    assert await close_code(ws) == 1000
    assert await on_server(srv, manager.connections()) == []
    assert await on_server(srv, manager.rooms()) == {}


async def test_exception_in_the_block_closes_1011(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, manager = server
    ws, _ = await open_chat(srv, "lobby")
    await ws.send("boom")
    assert await close_code(ws) == 1011
    assert await on_server(srv, manager.connections()) == []


async def test_client_disconnect_is_cleaned_up(
    server: tuple[ThreadServer, WebSocketManager],
) -> None:
    srv, manager = server
    ws, _ = await open_chat(srv, "lobby")
    other, _ = await open_chat(srv, "lobby?accept_first=1")
    await ws.close()

    async def one_left() -> bool:
        return len(await on_server(srv, manager.connections())) == 1

    await wait_until(one_left, 5, "the closed client to be removed")
    assert await on_server(srv, manager.rooms()) == {"lobby": 1}
    await other.close()


def test_user_route_in_process() -> None:
    app, _ = chat_app()
    with TestClient(app) as client, client.websocket_connect("/chat/r?user=bo") as ws:
        conn_id = ws.receive_json()["data"]["hello"]
        ws.send_text("hi")
        assert ws.receive_json() == {"type": "message", "room": "r", "data": {"said": "hi"},
                                     "sender": conn_id}


def test_connect_refuses_an_invalid_room() -> None:
    _, manager = make_app()
    with pytest.raises(ValueError, match="room"):
        manager.connect(object(), rooms=["bad room"])


def test_connection_used_outside_the_block_is_an_error() -> None:
    _, manager = make_app()
    conn = manager.connect(object(), rooms=["a"])
    with pytest.raises(RuntimeError, match="async with"):
        _ = conn.id



