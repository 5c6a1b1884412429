"""The plugin's contract under real ASGI servers: each one a subprocess, real clients, SIGTERM.

The app is ``tests/apps/servers_app.py`` (the Quick-start app plus broadcast and kick routes).
What a server itself cannot carry is asserted as measured, so that a server release that
fixes it fails here and ``docs/servers.md`` gets updated.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from tests.servers import (
    Server,
    closed_with,
    open_client,
    running,
    shutdown_close,
    stalled_client,
)
from tests.ws_helpers import recv_type

pytestmark = pytest.mark.slow

SERVERS = ["uvicorn", "uvicorn-wsproto", "hypercorn", "granian", "daphne"]
FAST_PATH = {"uvicorn", "uvicorn-wsproto"}
"""Servers whose connections take the fast path (uvicorn's websockets-sansio and wsproto)."""
DROPS_CLOSE_REASON = {"daphne"}
SHUTDOWN_CODE = {"uvicorn": 1012, "uvicorn-wsproto": 1012, "hypercorn": 1001}
NO_CLOSE_FRAME_ON_SIGTERM = {
    "granian": "granian drops websockets on SIGTERM without a close frame (server limit)",
    "daphne": "daphne drops websockets on SIGTERM without a close frame (server limit)",
}
WARNING = 'backend="redis://..."'


async def in_thread(server: Server, method: str, path: str, body: object = None) -> object:
    if method == "get":
        return await asyncio.to_thread(server.get, path)
    return await asyncio.to_thread(server.post, path, body)


@pytest.mark.parametrize("name", SERVERS)
async def test_rooms_broadcast_and_kick(name: str) -> None:
    with running(name) as server:
        ws, conn_id = await open_client(server, "lobby")
        await ws.send(json.dumps({"type": "publish", "data": {"text": "hi"}}))
        echo = await recv_type(ws, "message")
        assert echo["data"] == {"text": "hi"} and echo["sender"] == conn_id

        assert await in_thread(server, "post", "/broadcast/lobby", {"n": 1}) == {"delivered": 1}
        broadcast = await recv_type(ws, "message")
        assert broadcast["data"] == {"n": 1} and broadcast["sender"] is None

        fast = await in_thread(server, "get", f"/fast/{conn_id}")
        assert fast == {"found": True, "fast": name in FAST_PATH}

        kicked = await in_thread(server, "post", f"/kick/{conn_id}?reason=bye%20now")
        assert kicked == {"found": True}
        code, reason = await closed_with(ws)
        assert code == 4000
        assert reason == ("" if name in DROPS_CLOSE_REASON else "bye now")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=NO_CLOSE_FRAME_ON_SIGTERM[n]))
     if n in NO_CLOSE_FRAME_ON_SIGTERM else n for n in SERVERS],
)
async def test_sigterm_tells_clients_to_reconnect(name: str) -> None:
    with running(name) as server:
        code, _, exited = await shutdown_close(server)
    assert exited < 10
    assert code == SHUTDOWN_CODE.get(name, 1001)


@pytest.mark.parametrize("name", ["uvicorn", "hypercorn"])
async def test_sigterm_closes_user_owned_routes_too(name: str) -> None:
    with running(name) as server:
        ws = await connect(f"{server.ws_url}/own/desk", ping_interval=None, open_timeout=10)
        first = await recv_type(ws, "message")
        assert first["data"]["type"] == "welcome"
        exited = asyncio.get_running_loop().run_in_executor(None, server.terminate)
        code, _ = await closed_with(ws, 15)
        assert await exited < 10
    assert code == SHUTDOWN_CODE[name]


@pytest.mark.parametrize("name", ["granian", "daphne"])
async def test_sigterm_without_close_frame_is_abnormal(name: str) -> None:
    """What the xfails above measure: the client sees 1006 and the server exits at once."""
    with running(name) as server:
        code, _, exited = await shutdown_close(server)
    assert (code, exited < 5) == (1006, True)


@pytest.mark.parametrize("name", ["uvicorn", "hypercorn"])
def test_shutdown_ends_with_a_client_that_stopped_reading(name: str) -> None:
    """Plain ``uvicorn app:app`` (no --timeout-graceful-shutdown) and hypercorn used to wait
    forever for the stalled transport to flush."""
    with running(name) as server:
        sock = stalled_client(server, "flood")
        try:
            flooded = server.post("/flood/flood?count=100&size=65536")
            assert flooded == {"delivered": 100}  # queued: kernel buffers and transport full
            time.sleep(0.3)
            assert server.terminate() < 10
        finally:
            sock.close()
    if name == "uvicorn":
        assert "Exception" not in server.log()  # (hypercorn logs its own cancelled tasks)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "uvicorn", "{app}", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2"],
        ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
         "-b", "127.0.0.1:{port}", "{app}"],
    ],
    ids=["uvicorn-workers", "gunicorn"],
)
def test_memory_backend_under_several_workers_warns(argv: list[str]) -> None:
    with running(argv[1], argv=argv) as server:
        deadline = time.monotonic() + 20
        while server.log().count(WARNING) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        server.terminate()
    log = server.log()
    assert log.count(WARNING) == 2, log  # one per worker
    assert "memory://" in log and "2 worker processes" in log


def test_one_worker_does_not_warn() -> None:
    with running("uvicorn") as server:
        server.get("/fast/none")  # the app is up: its lifespan started the manager
        server.terminate()
    assert WARNING not in server.log()
