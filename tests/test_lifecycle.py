"""How connections end: abrupt TCP resets mid-broadcast, manager stop, server shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ThreadServer
from tests.ws_helpers import (
    abort,
    close_code,
    errors_logged,
    make_app,
    on_server,
    open_client,
    recv_type,
    serve,
    wait_until,
)
from wsplugin import ConnectionInfo, WebSocketManager, install_ws_manager

PAD = "p" * 1000
SNDBUF = 16384  # small kernel send buffers, so writers and queues are busy when RSTs arrive


async def open_many(
    server: ThreadServer, room: str, count: int
) -> list[tuple[ClientConnection, str]]:
    clients: list[tuple[ClientConnection, str]] = []
    for start in range(0, count, 50):
        batch = [open_client(server, room, compression=None)
                 for _ in range(min(50, count - start))]
        clients += await asyncio.gather(*batch)
    return clients


async def storm(
    manager: WebSocketManager, rooms: list[str], stop: threading.Event, pause: float = 0.0
) -> int:
    """Broadcast ~1 KB messages to ``rooms`` until ``stop``, pausing every 5 rounds."""
    sent = 0
    while not stop.is_set():
        for room in rooms:
            await manager.broadcast(room, {"seq": sent, "pad": PAD})
        sent += 1
        if sent % 5 == 0:
            await asyncio.sleep(pause)
    return sent


async def emptied(server: ThreadServer, manager: WebSocketManager) -> bool:
    connections = await on_server(server, manager.connections())
    rooms = await on_server(server, manager.rooms())
    return bool(connections == [] and rooms == {})


@pytest.mark.timeout(90)
async def test_200_abrupt_disconnects_during_a_broadcast_storm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big_queues: dict[str, Any] = {"max_queue_messages": 10**6, "max_queue_bytes": 2**32}
    with serve(sndbuf=SNDBUF, rate_limit=None, **big_queues) as (server, manager), \
            errors_logged(caplog) as errors:
        clients = await open_many(server, "storm", 200)
        for _, conn_id in clients[::2]:  # half of them are in a second room too
            await on_server(server, manager.join(conn_id, "storm-2"))
        assert await on_server(server, manager.rooms()) == {"storm": 200, "storm-2": 100}
        assert server.loop is not None
        stop = threading.Event()
        storming = asyncio.run_coroutine_threadsafe(
            storm(manager, ["storm", "storm-2"], stop, pause=0.001), server.loop)

        async def all_backed_up() -> bool:  # every socket is full: each has a writer waiting
            infos: list[ConnectionInfo] = await on_server(server, manager.connections())
            return min(i.queue_depth for i in infos) > 0

        await wait_until(all_backed_up, 30, "every connection to have queued messages")
        queued = sum(i.queue_depth for i in await on_server(server, manager.connections()))
        for n, (ws, _) in enumerate(clients):
            await abort(ws)
            if n % 20 == 19:
                await asyncio.sleep(0.01)  # resets arrive while broadcasts go on
        await wait_until(lambda: emptied(server, manager), 20, "connections and rooms to empty")
        stop.set()
        sent = await asyncio.wrap_future(storming)
        stats = await on_server(server, manager.stats())

        survivor, _ = await open_client(server, "storm")  # the server still serves
        await on_server(server, manager.broadcast("storm", "after the storm"))
        assert (await recv_type(survivor, "message"))["data"] == "after the storm"
        await survivor.close()

    print(f"\nabrupt-disconnect test: 200 clients reset while {queued} messages were queued "
          f"behind full sockets; {sent} broadcast rounds x 2 rooms; messages_out "
          f"{stats['messages_out']}, dropped {stats['dropped']} (what was queued when a "
          f"connection ended), slow_closes {stats['slow_closes']}")
    assert sent > 0 and queued > 0
    assert stats["slow_closes"] == 0  # every connection ended by its reset
    assert stats["connections"] == 0 and stats["rooms"] == 0
    assert manager.local_connections() == []
    assert manager.hub.rooms == {}
    assert errors == [], [r.getMessage() for r in errors]


async def test_abrupt_disconnect_of_a_user_owned_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, manager = make_app()

    @app.websocket("/own/{room}")
    async def own(websocket: WebSocket, room: str) -> None:
        async with manager.connect(websocket, rooms=[room]) as conn:
            await conn.send("ready")
            async for _ in conn:
                pass

    with ThreadServer(app) as server, errors_logged(caplog) as errors:
        clients = []
        for _ in range(20):
            ws = await connect(f"{server.ws_url}/own/r", compression=None)
            await ws.recv()
            clients.append(ws)
        assert await on_server(server, manager.rooms()) == {"r": 20}
        for n in range(50):
            await on_server(server, manager.broadcast("r", {"n": n, "pad": PAD}))
        for ws in clients:
            await abort(ws)
        await wait_until(lambda: emptied(server, manager), 10, "the user route to clean up")
    assert errors == [], [r.getMessage() for r in errors]


async def test_manager_stop_closes_clients_with_1001() -> None:
    with serve() as (server, manager):
        clients = [(await open_client(server, room))[0] for room in ("a", "a", "b")]
        await on_server(server, manager.stop())
        for ws in clients:
            assert await close_code(ws) == 1001
            assert ws.close_reason
        assert manager.local_connections() == []
        ws, _ = await open_client(server, "a")  # the next connection starts it again
        await on_server(server, manager.broadcast("a", "again"))
        assert (await recv_type(ws, "message"))["data"] == "again"
        await ws.close()


@pytest.mark.timeout(60)
async def test_shutdown_closes_clients_with_1001_or_1012_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append(f"shutdown with {len(app.state.ws_manager.local_connections())} open")

    app = FastAPI(lifespan=lifespan)
    manager = install_ws_manager(app, backend="memory://", admin_path=None, rate_limit=None)

    @app.websocket("/own")
    async def own(websocket: WebSocket) -> None:
        async with manager.connect(websocket, rooms=["a"]) as conn:
            async for _ in conn:
                pass

    server = ThreadServer(app).start()
    with errors_logged(caplog) as errors:
        clients = [(await open_client(server, room))[0] for room in ("a", "b", "c") * 5]
        own_client = await connect(f"{server.ws_url}/own")
        clients.append(own_client)
        await wait_until(lambda: has_connections(server, manager, 16), 5, "16 connections")
        for n in range(20):
            await on_server(server, manager.broadcast("a", {"n": n}))
        codes_task = [asyncio.create_task(close_code(ws)) for ws in clients]
        await asyncio.to_thread(server.stop)
        codes = await asyncio.gather(*codes_task)
    assert not server.thread.is_alive()
    print(f"\nshutdown test: close codes seen by the clients: {set(codes)}")
    assert set(codes) <= {1001, 1012}, codes
    assert manager.local_connections() == []
    assert manager.hub.rooms == {}
    assert events[0] == "startup" and events[1].startswith("shutdown with")
    assert errors == [], [r.getMessage() for r in errors]


async def has_connections(server: ThreadServer, manager: WebSocketManager, count: int) -> bool:
    connections: list[Any] = await on_server(server, manager.connections())
    return len(connections) == count


async def test_client_closing_normally_during_a_storm(caplog: pytest.LogCaptureFixture) -> None:
    with serve(rate_limit=None) as (server, manager), errors_logged(caplog) as errors:
        clients = await open_many(server, "storm", 50)
        assert server.loop is not None
        stop = threading.Event()
        storming = asyncio.run_coroutine_threadsafe(
            storm(manager, ["storm"], stop, pause=0.002), server.loop)
        await asyncio.sleep(0.1)
        readers = [asyncio.create_task(close_code(ws)) for ws, _ in clients]
        await asyncio.gather(*(ws.close() for ws, _ in clients))
        assert set(await asyncio.gather(*readers)) == {1000}
        await wait_until(lambda: emptied(server, manager), 10, "connections to be removed")
        stop.set()
        await asyncio.wrap_future(storming)
    assert errors == [], [r.getMessage() for r in errors]



