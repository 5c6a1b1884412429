"""Helpers shared by the core tests: apps with a manager, real clients, polling."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import ThreadServer
from wsplugin import WebSocketManager, install_ws_manager

NOISY_LOGGERS = ("uvicorn", "uvicorn.error", "wsplugin", "asyncio")


def make_app(**options: Any) -> tuple[FastAPI, WebSocketManager]:
    """A FastAPI app with the manager installed (in-memory backend, no admin)."""
    app = FastAPI()
    options.setdefault("backend", "memory://")
    options.setdefault("admin_path", None)
    return app, install_ws_manager(app, **options)


UVICORN_WS = {"websockets-sansio": 12, "wsproto": 15}
"""uvicorn's sans-I/O websocket protocols (both take the fast path), and the window bits
each negotiates with a client that offers permessage-deflate without asking for a size."""


@pytest.fixture(params=sorted(UVICORN_WS))
def uvicorn_ws(request: pytest.FixtureRequest) -> str:
    """uvicorn's ``ws`` setting: a test that takes it runs under both protocols."""
    return str(request.param)


class SmallBufferServer(ThreadServer):
    """A ThreadServer whose accepted sockets have a fixed, small kernel send buffer.

    Linux autotunes a socket's send buffer up to ``tcp_wmem`` max (4 MiB by default), so a
    client that stops reading first absorbs megabytes in the server's kernel buffer before
    the application's queue sees any back-pressure. Setting ``SO_SNDBUF`` on the listening
    socket (accepted sockets inherit it, without autotuning) makes a test reach the queue
    limit after kilobytes instead.
    """

    def __init__(self, app: Any, sndbuf: int, **config: Any) -> None:
        super().__init__(app, **config)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.bind(("127.0.0.1", self.port))

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            self.loop.close()
            self.sock.close()


@contextlib.contextmanager
def serve(
    *, sndbuf: int | None = None, ws: str = "auto", **options: Any
) -> Iterator[tuple[ThreadServer, WebSocketManager]]:
    """A real uvicorn server on 127.0.0.1 running an app with a manager.

    ``sndbuf``: a fixed kernel send buffer for every accepted socket (see SmallBufferServer).
    ``ws``: uvicorn's websocket protocol.
    """
    app, manager = make_app(**options)
    server = ThreadServer(app, ws=ws) if sndbuf is None else SmallBufferServer(app, sndbuf, ws=ws)
    with server:
        yield server, manager


async def on_server(server: ThreadServer, coro: Awaitable[Any], seconds: float = 10.0) -> Any:
    """Run ``coro`` on the server's loop without blocking the test's loop."""
    assert server.loop is not None
    future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
        coro, server.loop  # type: ignore[arg-type]
    )
    return await asyncio.wait_for(asyncio.wrap_future(future), seconds)


async def recv_json(ws: ClientConnection, seconds: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), seconds))
    return frame


async def recv_type(ws: ClientConnection, kind: str, seconds: float = 5.0) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others."""
    deadline = time.monotonic() + seconds
    while True:
        frame = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if frame["type"] == kind:
            return frame


async def send_json(ws: ClientConnection, frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def open_client(
    server: ThreadServer, room: str, **kwargs: Any
) -> tuple[ClientConnection, str]:
    """Connect to ``/ws/{room}``, read the welcome; returns the client and its connection id."""
    ws = await connect(f"{server.ws_url}/ws/{room}", **kwargs)
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    assert welcome["rooms"] == [room.partition("?")[0]]
    return ws, str(welcome["connection_id"])


async def close_code(ws: ClientConnection, seconds: float = 10.0) -> int | None:
    """Read (and discard) frames until the server closes; the close code it sent."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    return ws.close_code


async def abort(ws: ClientConnection) -> None:
    """Drop the TCP connection abruptly: SO_LINGER 0, so the kernel sends a RST."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()
    await asyncio.sleep(0)  # the loop closes the socket on its next iteration


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], seconds: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async predicate until it holds or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Capture records at ERROR and above from uvicorn, wsplugin and asyncio.

    uvicorn's default logging config stops propagation at the ``uvicorn`` logger, so it is
    re-enabled here for the duration (the ThreadServer runs in this process).
    """
    found: list[logging.LogRecord] = []
    uvicorn_logger = logging.getLogger("uvicorn")
    saved = uvicorn_logger.propagate
    uvicorn_logger.propagate = True
    caplog.set_level(logging.INFO)
    try:
        yield found
    finally:
        uvicorn_logger.propagate = saved
        found.extend(r for r in caplog.records if r.levelno >= logging.ERROR)
