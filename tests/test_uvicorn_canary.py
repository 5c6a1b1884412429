"""Canary: the uvicorn internals the fast path uses are still where it expects them.

The fast path (``wsplugin/delivery/uvicorn_writer.py``) writes to uvicorn's
websockets-sansio and wsproto
protocols directly. When uvicorn renames or moves what it relies on, wsplugin falls back to the
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
from wsplugin.delivery.uvicorn_writer import (
    DIRECT_KEY,
    PROTOCOLS,
    RAW_SEND_KEY,
    SANSIO_MODULE,
    WSPROTO_MODULE,
    Flavour,
    UvicornWriter,
    check_protocol,
)

HINT = f"(uvicorn {uvicorn.__version__}): update wsplugin/delivery/uvicorn_writer.py or pin uvicorn"
# uvicorn's ``ws`` setting, its module, its class, and the window bits uvicorn negotiates
# with a client that offers permessage-deflate without asking for a window size.
SERVED = [
    pytest.param("websockets-sansio", SANSIO_MODULE, "WebSocketsSansIOProtocol", 12,
                 id="websockets-sansio"),
    pytest.param("wsproto", WSPROTO_MODULE, "WSProtocol", 15, id="wsproto"),
]


@pytest.mark.parametrize(("ws", "module_name", "class_name", "bits"), SERVED)
def test_the_protocol_module_exists(ws: str, module_name: str, class_name: str,
                                    bits: int) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - only when uvicorn moved it
        pytest.fail(f"uvicorn no longer has {module_name} {HINT}: {exc}")
    protocol = getattr(module, class_name, None)
    assert protocol is not None, f"{module_name}.{class_name} is gone {HINT}"
    assert inspect.iscoroutinefunction(getattr(protocol, "send", None)), (
        f"{class_name}.send is no longer a coroutine method {HINT}")


@pytest.mark.parametrize(("ws", "module_name", "class_name", "bits"), SERVED)
def test_the_handshake_answer_is_read_only_until_it_is_sent(
    ws: str, module_name: str, class_name: str, bits: int,
) -> None:
    """The fast path drops the protocol's handshake answer once it was sent: uvicorn may
    read it only where it makes and sends it (``handle_connect``, and ``send`` before the
    handshake completes)."""
    flavour = PROTOCOLS[module_name]
    if not flavour.handshake_answer:
        return
    cls = getattr(importlib.import_module(module_name), class_name)
    readers = {name for name, member in vars(cls).items() if inspect.isfunction(member)
               and f"self.{flavour.handshake_answer}" in inspect.getsource(member)}
    assert readers == {"handle_connect", "send"}, (
        f"{class_name} reads self.{flavour.handshake_answer} in {sorted(readers)} {HINT}")
    send = inspect.getsource(cls.send)
    guard = send.find("if not self.handshake_complete")
    first_use = send.find(f"self.{flavour.handshake_answer}")
    assert 0 <= guard < first_use, f"{class_name}.send reads it outside the handshake {HINT}"


@pytest.mark.parametrize("module_name", [SANSIO_MODULE, WSPROTO_MODULE])
def test_the_open_state_exists(module_name: str) -> None:
    flavour = PROTOCOLS[module_name]
    assert flavour.open_state is not None, (
        f"{flavour.library.name}'s OPEN connection state is gone {HINT}")


def test_uvicorn_picks_the_sansio_protocol_by_default() -> None:
    auto = importlib.import_module("uvicorn.protocols.websockets.auto")
    chosen = auto.AutoWebSocketsProtocol
    assert chosen is not None and chosen.__module__ == SANSIO_MODULE, (
        f"uvicorn's default websocket protocol is now {chosen!r}, not websockets-sansio: "
        f"servers started without ws='websockets-sansio' lose the fast path {HINT}")


@pytest.mark.parametrize(("ws", "module_name", "class_name", "bits"), SERVED)
async def test_a_live_connection_has_every_attribute_the_fast_path_uses(
    ws: str, module_name: str, class_name: str, bits: int,
) -> None:
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
            seen["missing"] = check_protocol(protocol, PROTOCOLS[module_name])
            seen["writer"] = type(conn.connection.frames).__name__
            async for _ in conn:
                pass

    with ThreadServer(app, ws=ws) as server:
        client = await connect(f"{server.ws_url}/probe", compression=None)

        async def entered() -> bool:
            return "writer" in seen

        await wait_until(entered, what="the route to open its connection")
        await client.close()
    assert seen["module"] == module_name, f"the server's send is {seen['module']} {HINT}"
    assert seen["direct"] is True, "wsplugin's send probe did not run (middleware stack)"
    assert seen["missing"] is None, f"uvicorn no longer has {seen['missing']} {HINT}"
    assert seen["writer"] == UvicornWriter.__name__, (
        f"a plain connection got {seen['writer']}, not the fast path {HINT}")


@pytest.mark.parametrize(("ws", "module_name", "class_name", "bits"), SERVED)
async def test_a_deflate_connection_exposes_what_shared_compression_uses(
    ws: str, module_name: str, class_name: str, bits: int,
) -> None:
    """uvicorn's negotiated extension is the library's PerMessageDeflate, whose context
    takeover switch wsplugin turns on (see wsplugin/delivery/deflate.py)."""
    flavour: Flavour = PROTOCOLS[module_name]
    app = FastAPI()
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    seen: dict[str, Any] = {}

    @app.websocket("/probe")
    async def probe(websocket: WebSocket) -> None:
        protocol: Any = getattr(websocket.scope.get(RAW_SEND_KEY), "__self__", None)
        async with manager.connect(websocket) as conn:
            extensions = flavour.extensions(flavour.state_holder(protocol))
            seen["bits"] = flavour.library.negotiated_bits(extensions)
            seen["switched"] = [getattr(e, flavour.library.switch) for e in extensions]
            seen["writer"] = type(conn.connection.frames).__name__
            async for _ in conn:
                pass

    with ThreadServer(app, ws=ws) as server:
        client = await connect(f"{server.ws_url}/probe")  # offers permessage-deflate

        async def entered() -> bool:
            return "writer" in seen

        await wait_until(entered, what="the route to open its connection")
        await client.close()
    assert seen["bits"] == bits, f"uvicorn's permessage-deflate is now {seen['bits']!r} {HINT}"
    assert seen["switched"] == [True]
    assert seen["writer"] == UvicornWriter.__name__
