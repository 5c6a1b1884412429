"""Choosing a connection's writer: the fast path where it is safe, the ASGI send otherwise."""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect

from tests.support import ThreadServer
from tests.ws_helpers import make_app, on_server, open_client, recv_json
from wsplugin.config import build_settings
from wsplugin.delivery import writer_choice as writer
from wsplugin.delivery.asgi_writer import ASGIWriter
from wsplugin.delivery.uvicorn_writer import (
    SANSIO_MODULE,
    UvicornWriter,
    check_protocol,
    uvicorn_writer,
)


@pytest.fixture(autouse=True)
def fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "_logged", set())


class CountingMiddleware:
    """A user middleware that wraps websocket sends (it counts the frames it sees)."""

    seen = 0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                CountingMiddleware.seen += 1
            await send(message)

        await self.app(scope, receive, counting_send if scope["type"] == "websocket" else send)


class PassThroughMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def writer_of(server: ThreadServer, manager: Any, **client: Any) -> tuple[Any, type]:
    ws, conn_id = await open_client(server, "r", compression=None, **client)
    return ws, type(manager.hub.connections[conn_id].frames)


def only_writer(manager: Any) -> Any:
    (conn,) = manager.hub.connections.values()
    return conn.frames


async def test_uvicorns_wsproto_protocol_takes_the_fast_path_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wsplugin")
    app, manager = make_app()
    with ThreadServer(app, ws="wsproto") as server:
        ws, kind = await writer_of(server, manager)
        assert kind is UvicornWriter
        await on_server(server, manager.broadcast("r", {"n": 1}))
        assert (await recv_json(ws))["data"] == {"n": 1}
        await ws.close()
    assert "websocket writes use the uvicorn wsproto fast path" in caplog.text


async def test_plain_uvicorn_connections_take_the_fast_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wsplugin")
    app, manager = make_app()
    with ThreadServer(app) as server:
        first, kind = await writer_of(server, manager)
        second, _ = await writer_of(server, manager)
        assert kind is UvicornWriter
        await first.close()
        await second.close()
    logged = [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()]
    assert logged == ["wsplugin: websocket writes use the uvicorn websockets-sansio fast path"]


async def test_fast_path_false_writes_through_asgi(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsplugin")
    app, manager = make_app(fast_path=False)
    with ThreadServer(app) as server:
        ws, kind = await writer_of(server, manager)
        assert kind is ASGIWriter
        await on_server(server, manager.broadcast("r", {"n": 1}))
        assert (await recv_json(ws))["data"] == {"n": 1}
        await ws.close()
    assert "fast_path=False" in caplog.text


async def test_another_uvicorn_protocol_writes_through_asgi(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wsplugin")
    with warnings.catch_warnings():  # deprecated in uvicorn: it warns once, on import
        warnings.simplefilter("ignore")
        importlib.import_module("uvicorn.protocols.websockets.websockets_impl")
    app, manager = make_app()
    with ThreadServer(app, ws="websockets") as server:
        ws, kind = await writer_of(server, manager)
        assert kind is ASGIWriter
        frames = only_writer(manager)
        # data frames skip the framework's send wrappers: the server's own send
        assert type(frames.direct_send.__self__).__module__ == (
            "uvicorn.protocols.websockets.websockets_impl")
        # the managed route's shortcut skips Starlette's exception layer and its send
        # wrapper (wsplugin/delivery/shortcut.py): the close frame's send is the server's too
        assert frames.send is frames.direct_send
        await on_server(server, manager.broadcast("r", {"n": 1}))
        assert (await recv_json(ws))["data"] == {"n": 1}
        await ws.close()
    assert "is not uvicorn's websockets-sansio" in caplog.text


@pytest.mark.parametrize("before_install", [True, False])
async def test_a_middleware_that_wraps_sends_keeps_seeing_every_frame(
    before_install: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    """Wherever it is added, a send-wrapping middleware is detected: the ASGI path, a warning."""
    caplog.set_level(logging.INFO, "wsplugin")
    from fastapi import FastAPI

    from wsplugin import install_ws_manager

    app = FastAPI()
    if before_install:
        app.add_middleware(CountingMiddleware)
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    if not before_install:
        app.add_middleware(CountingMiddleware)
    CountingMiddleware.seen = 0
    with ThreadServer(app) as server:
        ws, kind = await writer_of(server, manager)
        assert kind is ASGIWriter
        assert only_writer(manager).direct_send is only_writer(manager).send  # the wrapped one
        for n in range(3):
            await on_server(server, manager.broadcast("r", {"n": n}))
        assert [(await recv_json(ws))["data"]["n"] for _ in range(3)] == [0, 1, 2]
        await ws.close()
    assert CountingMiddleware.seen == 4  # the welcome and the three broadcasts
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "a middleware wraps websocket sends" in warnings[0].getMessage()


async def test_a_middleware_that_passes_send_through_keeps_the_fast_path() -> None:
    app, manager = make_app()
    app.add_middleware(PassThroughMiddleware)
    with ThreadServer(app) as server:
        ws = await connect(f"{server.ws_url}/ws/r", compression=None)
        welcome = await recv_json(ws)
        assert type(manager.hub.connections[welcome["connection_id"]].frames) is UvicornWriter
        await ws.close()


def stub_protocol(**attributes: Any) -> Any:
    """An object that looks like uvicorn's protocol to the module check."""
    cls = type("WebSocketsSansIOProtocol", (), {"__module__": SANSIO_MODULE})
    protocol = cls()
    for name, value in attributes.items():
        setattr(protocol, name, value)
    return protocol


def test_a_missing_uvicorn_attribute_is_named_and_falls_back() -> None:
    protocol = stub_protocol(writable=None, transport=None, conn=None)  # no close_sent

    async def send(message: Any) -> None:
        pass

    raw_send = type("BoundSend", (), {"__self__": protocol})()  # what a bound method has
    scope = {"wsplugin.raw_send": raw_send, "wsplugin.send_direct": True}
    assert check_protocol(protocol) == "WebSocketsSansIOProtocol.close_sent (a bool)"
    chosen, reason = uvicorn_writer(None, send, scope)  # type: ignore[arg-type]
    assert chosen is None
    assert "close_sent" in reason


@pytest.mark.parametrize(("raw", "expected"), [("auto", "auto"), ("false", False),
                                               ("0", False), ("true", True)])
def test_fast_path_from_the_environment(raw: str, expected: Any) -> None:
    assert build_settings({}, env={"WSPLUGIN_FAST_PATH": raw}).fast_path == expected


def test_fast_path_is_validated() -> None:
    with pytest.raises(ValueError, match="fast_path"):
        build_settings({"fast_path": "always"}, env={})
    with pytest.raises(ValueError, match="WSPLUGIN_FAST_PATH"):
        build_settings({}, env={"WSPLUGIN_FAST_PATH": "sometimes"})
