"""Canary: the uvicorn internals the fast path uses are still where it expects them.

The fast path (``wsplugin/_fastpath.py``) writes to uvicorn's websockets-sansio protocol
directly. When uvicorn renames or moves what it relies on, wsplugin falls back to the
ASGI ``send`` on its own (correct, but slower); this test is what tells us, by name.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect

from tests.support import ThreadServer
from tests.ws_helpers import wait_until
from wsplugin import install_ws_manager
from wsplugin._deflate import negotiated_bits
from wsplugin._fastpath import (
    DIRECT_KEY,
    RAW_SEND_KEY,
    SANSIO_MODULE,
    UvicornWriter,
    check_protocol,
)

HINT = f"(uvicorn {uvicorn.__version__}): update wsplugin/_fastpath.py or pin uvicorn"


def test_the_sansio_protocol_module_exists() -> None:
    try:
        module = importlib.import_module(SANSIO_MODULE)
    except ImportError as exc:  # pragma: no cover - only when uvicorn moved it
        pytest.fail(f"uvicorn no longer has {SANSIO_MODULE} {HINT}: {exc}")
    protocol = getattr(module, "WebSocketsSansIOProtocol", None)
    assert protocol is not None, f"{SANSIO_MODULE}.WebSocketsSansIOProtocol is gone {HINT}"
    assert inspect.iscoroutinefunction(getattr(protocol, "send", None)), (
        f"WebSocketsSansIOProtocol.send is no longer a coroutine method {HINT}")


def test_websockets_state_open_exists() -> None:
    protocol = pytest.importorskip("websockets.protocol")
    assert hasattr(getattr(protocol, "State", None), "OPEN"), (
        f"websockets.protocol.State.OPEN is gone {HINT}")


def test_uvicorn_picks_the_sansio_protocol_by_default() -> None:
    auto = importlib.import_module("uvicorn.protocols.websockets.auto")
    chosen = auto.AutoWebSocketsProtocol
    assert chosen is not None and chosen.__module__ == SANSIO_MODULE, (
        f"uvicorn's default websocket protocol is now {chosen!r}, not websockets-sansio: "
        f"servers started without ws='websockets-sansio' lose the fast path {HINT}")


async def test_a_live_connection_has_every_attribute_the_fast_path_uses() -> None:
    app = FastAPI()
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    seen: dict[str, Any] = {}

    @app.websocket("/probe")
    async def probe(websocket: WebSocket) -> None:
        raw_send = websocket.scope.get(RAW_SEND_KEY)
        protocol = getattr(raw_send, "__self__", None)
        seen["module"] = type(protocol).__module__
        seen["direct"] = websocket.scope.get(DIRECT_KEY)
        async with manager.connect(websocket) as conn:
            seen["missing"] = check_protocol(protocol)
            seen["writer"] = type(conn.connection.frames).__name__
            async for _ in conn:
                pass

    with ThreadServer(app, ws="websockets-sansio") as server:
        ws = await connect(f"{server.ws_url}/probe", compression=None)

        async def entered() -> bool:
            return "writer" in seen

        await wait_until(entered, what="the route to open its connection")
        await ws.close()
    assert seen["module"] == SANSIO_MODULE, f"the server's send is {seen['module']} {HINT}"
    assert seen["direct"] is True, "wsplugin's send probe did not run (middleware stack)"
    assert seen["missing"] is None, f"uvicorn no longer has {seen['missing']} {HINT}"
    assert seen["writer"] == UvicornWriter.__name__, (
        f"a plain connection got {seen['writer']}, not the fast path {HINT}")


async def test_a_deflate_connection_exposes_what_shared_compression_uses() -> None:
    """uvicorn's negotiated extension is websockets' PerMessageDeflate, whose
    ``local_no_context_takeover`` wsplugin switches on (see wsplugin/_deflate.py)."""
    app = FastAPI()
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    seen: dict[str, Any] = {}

    @app.websocket("/probe")
    async def probe(websocket: WebSocket) -> None:
        protocol: Any = getattr(websocket.scope.get(RAW_SEND_KEY), "__self__", None)
        extensions = list(protocol.conn.extensions)
        seen["bits"] = negotiated_bits(extensions)
        async with manager.connect(websocket) as conn:
            seen["switched"] = [e.local_no_context_takeover for e in extensions]
            seen["writer"] = type(conn.connection.frames).__name__
            async for _ in conn:
                pass

    with ThreadServer(app, ws="websockets-sansio") as server:
        ws = await connect(f"{server.ws_url}/probe")  # offers permessage-deflate

        async def entered() -> bool:
            return "writer" in seen

        await wait_until(entered, what="the route to open its connection")
        await ws.close()
    assert seen["bits"] == 12, f"uvicorn's permessage-deflate is now {seen['bits']!r} {HINT}"
    assert seen["switched"] == [True]
    assert seen["writer"] == UvicornWriter.__name__
