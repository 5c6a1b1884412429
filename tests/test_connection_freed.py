"""A connection that ended is freed at once (reference counting), not left to the collector.

With the garbage collector off, a closed connection's objects are still alive only if
something holds them or they form a cycle. A cycle would keep the connection, its writer
and uvicorn's protocol object (with its transport and scope) until a collection that
reaches them: with long-lived connections that is a full one, which ``gc_tuning`` makes
rare, so under reconnects the memory of every closed connection piles up (measured by
``bench/soak.py``: about 20 KB per reconnect).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.server import ServerProtocol

from tests.support import ThreadServer
from tests.ws_helpers import (
    abort,
    close_code,
    make_app,
    on_server,
    open_client,
    uvicorn_ws,
    wait_until,
)
from wsplugin import WSManager
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.uvicorn_writer import PROTOCOLS

__all__ = ["uvicorn_ws"]  # a fixture

COUNT = 5


def alive() -> tuple[int, int, int]:
    """Connections, uvicorn websocket protocol objects and websockets' sans-I/O server
    protocols (``websockets-sansio`` only) that still exist."""
    conns = protocols = sansio = 0
    for obj in gc.get_objects():
        kind = type(obj)
        if kind is Connection:
            conns += 1
        elif kind.__module__ in PROTOCOLS and issubclass(kind, asyncio.Protocol):
            protocols += 1
        elif kind is ServerProtocol:
            sansio += 1
    return conns, protocols, sansio


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()  # what earlier tests left
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def app_with_user_route() -> tuple[FastAPI, WSManager]:
    app, manager = make_app()

    @app.websocket("/own/{room}")
    async def own(websocket: WebSocket, room: str, ws_manager: WSManager) -> None:
        async with ws_manager.connect(websocket, rooms=[room]) as conn:
            async for _ in conn:
                pass

    return app, manager


async def end(server: ThreadServer, manager: WSManager, ws: ClientConnection, conn_id: str,
              ending: str) -> None:
    if ending == "client closes":
        await ws.close()
    elif ending == "client resets":
        await abort(ws)
    else:  # the server kicks it
        assert await on_server(server, manager.kick(conn_id))
        assert await close_code(ws) == 4000


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize("ending", ["client closes", "client resets", "server kicks"])
async def test_an_ended_connection_is_freed_without_a_collection(
    uvicorn_ws: str, ending: str
) -> None:
    app, manager = make_app()
    with ThreadServer(app, ws=uvicorn_ws) as server:
        stays, _ = await open_client(server, "room")  # the room and the server go on
        before = alive()
        clients = [await open_client(server, "room") for _ in range(COUNT)]
        sansio = COUNT if uvicorn_ws == "websockets-sansio" else 0
        assert alive() == (before[0] + COUNT, before[1] + COUNT, before[2] + sansio)
        for ws, conn_id in clients:
            await end(server, manager, ws, conn_id, ending)

        # a kick ends the connection before the client's close frame comes back, which
        # websockets' parser must still read: its ServerProtocol waits for a collection
        counted = 3 if ending != "server kicks" else 2

        async def freed() -> bool:
            return alive()[:counted] == before[:counted]

        await wait_until(freed, 5.0, f"the ended connections to be freed (alive: {alive()}, "
                                     f"before: {before})")
        await stays.close()


@pytest.mark.usefixtures("collector_off")
async def test_a_user_route_connection_is_freed_without_a_collection() -> None:
    app, manager = app_with_user_route()
    with ThreadServer(app) as server:
        stays = await connect(f"{server.ws_url}/own/room")
        await wait_until(lambda: _has(server, manager, 1), 5.0, "the first connection")
        before = alive()
        clients = [await connect(f"{server.ws_url}/own/room") for _ in range(COUNT)]
        await wait_until(lambda: _has(server, manager, 1 + COUNT), 5.0, "the connections")
        for ws in clients:
            await ws.close()

        async def freed() -> bool:
            return alive() == before

        await wait_until(freed, 5.0, f"the ended connections to be freed (alive: {alive()}, "
                                     f"before: {before})")
        await stays.close()


async def _has(server: ThreadServer, manager: WSManager, count: int) -> bool:
    return len(await on_server(server, manager.connections())) == count
