"""The ASGI servers the plugin is tested under, and probes a real client runs against them.

Used by ``tests/test_servers.py`` and by ``scripts/server-matrix`` (which prints the
compatibility table of ``docs/servers.md``). Each server runs as a subprocess on a free port
of 127.0.0.1 and is stopped with SIGTERM, as a process manager would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import ROOT, free_port, wait_port
from tests.ws_helpers import recv_json

APP = "tests.apps.servers_app:app"


def _uvicorn(*extra: str) -> list[str]:
    return ["-m", "uvicorn", "{app}", "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", "--ws-ping-interval", "{ping}", *extra]


SERVERS: dict[str, list[str]] = {
    "uvicorn": _uvicorn(),
    "uvicorn-websockets": _uvicorn("--ws", "websockets"),
    "uvicorn-wsproto": _uvicorn("--ws", "wsproto"),
    "hypercorn": ["-m", "hypercorn", "{app}", "--bind", "127.0.0.1:{port}",
                  "--log-level", "warning", "--websocket-ping-interval", "{ping}"],
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "-v", "0",
               "--ping-interval", "{ping}", "{app}"],
    "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", "{port}", "--log-level", "warning", "{app}"],
    "gunicorn": ["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
                 "-b", "127.0.0.1:{port}", "--log-level", "warning", "{app}"],
}
"""argv after ``python`` for each server; ``{app}``, ``{port}`` and ``{ping}`` are filled in."""


@dataclass
class Server:
    """A running server process and the port it listens on."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: str

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def post(self, path: str, body: Any = None) -> Any:
        """A JSON POST to the app (urllib: no event loop needed)."""
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def terminate(self, timeout: float = 20.0) -> float:
        """SIGTERM; seconds until the process exited (killed, and ``inf``, after ``timeout``)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return float("inf")
        return time.monotonic() - start

    def log(self) -> str:
        with open(self.log_path, errors="replace") as file:
            return file.read()


@contextlib.contextmanager
def running(
    name: str, *, app: str = APP, env: dict[str, str] | None = None, ping: float = 20.0,
    argv: list[str] | None = None, log_dir: str = "/tmp",
) -> Iterator[Server]:
    """Start server ``name`` (or ``argv``) on a free port; SIGTERM (then kill) at the end."""
    port = free_port()
    template = argv if argv is not None else SERVERS[name]
    cmd = [sys.executable] + [
        a.format(app=app, port=port, ping=f"{ping:g}") for a in template
    ]
    full_env = {**os.environ, "PYTHONPATH": ROOT}
    full_env.pop("WSPLUGIN_BACKEND", None)  # the memory backend unless ``env`` says otherwise
    full_env.update(env or {})
    log_path = os.path.join(log_dir, f"wsplugin-{name}-{port}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=log, stderr=log)
    server = Server(name, proc, port, log_path)
    try:
        wait_port(port, 20)
        yield server
    finally:
        if proc.poll() is None:
            server.terminate()


async def open_client(server: Server, room: str, **kwargs: Any) -> tuple[ClientConnection, str]:
    """Connect to ``/ws/{room}`` and read the welcome frame: the client and its id."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("compression", None)  # the fast path needs a frame without extensions
    kwargs.setdefault("open_timeout", 10)
    ws = await connect(f"{server.ws_url}/ws/{room}", **kwargs)
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    assert welcome["rooms"] == [room]
    return ws, str(welcome["connection_id"])


async def closed_with(ws: ClientConnection, seconds: float = 10.0) -> tuple[int | None, str]:
    """Read until the server closes: the close code and reason the client got (1006: none)."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    reason = ws.close_reason if ws.close_reason is not None else ""
    return ws.close_code, reason


async def shutdown_close(server: Server) -> tuple[int | None, str, float]:
    """Connect, SIGTERM the server: the client's close code and reason, the exit seconds."""
    ws, _ = await open_client(server, "bye")
    loop = asyncio.get_running_loop()
    exited = loop.run_in_executor(None, server.terminate)
    code, reason = await closed_with(ws, 15)
    return code, reason, await exited


class _PingSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("< PING"):
            self.seen.set()


async def server_pings(server: Server, seconds: float) -> bool:
    """Whether the server sends a protocol-level ping within ``seconds`` of an idle client."""
    logger = logging.getLogger("websockets.client")
    handler, level = _PingSeen(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        ws, _ = await open_client(server, "pings")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.seen.wait(), seconds)
        await ws.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.seen.is_set()


def stalled_client(server: Server, room: str) -> socket.socket:
    """A client that completes the handshake, then never reads again (small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/{room} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
