"""The managed route's shortcut past the framework's own layers (wsplugin/delivery/shortcut.py):
routing stays the router's, every middleware of the app still sees the connection, the
hooks see the scope the router would have made."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support import ThreadServer
from tests.ws_helpers import open_client, recv_json
from wsplugin import install_ws_manager
from wsplugin.delivery.uvicorn_writer import UvicornWriter

STACK_KEY = "fastapi_middleware_astack"
"""Set by FastAPI's exit-stack layer, one of the layers the shortcut skips."""


class Recorder:
    """A user middleware that only looks at websocket scopes (and may mark them)."""

    def __init__(self, app: ASGIApp, seen: list[str], mark: dict[str, Any]) -> None:
        self.app = app
        self.seen = seen
        self.mark = mark

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.seen.append(scope["path"])
            scope.update(self.mark)
        await self.app(scope, receive, send)


def app_with_hook(scopes: list[dict[str, Any]], **options: Any) -> FastAPI:
    app = FastAPI()

    def authenticate(websocket: WebSocket) -> str:
        scope = websocket.scope
        scopes.append({"router": scope.get("router"), "endpoint": scope.get("endpoint"),
                       "room": scope["path_params"]["room"],
                       "stack": STACK_KEY in scope,
                       "url": str(websocket.url_for("wsplugin", room="other"))})
        return "someone"

    install_ws_manager(app, backend="memory://", admin_path=None, authenticate=authenticate,
                       **options)
    return app


@pytest.mark.parametrize("middleware", [False, True])
async def test_the_hooks_see_the_scope_the_router_would_make(middleware: bool) -> None:
    scopes: list[dict[str, Any]] = []
    seen: list[str] = []
    app = app_with_hook(scopes)
    if middleware:
        app.add_middleware(Recorder, seen=seen, mark={})
    with ThreadServer(app) as server:
        ws, conn_id = await open_client(server, "lobby")
        manager = app.state.ws_manager
        assert isinstance(manager.hub.connections[conn_id].frames, UvicornWriter)
        await ws.close()
    (scope,) = scopes
    assert scope["router"] is app.router
    managed = next(r for r in app.router.routes if getattr(r, "name", "") == "wsplugin")
    assert scope["endpoint"] is managed.endpoint
    assert scope["room"] == "lobby"
    assert scope["url"].endswith("/ws/other")
    assert scope["stack"] is False  # the framework's inner layers were skipped
    assert seen == (["/ws/lobby"] if middleware else [])  # the app's middleware saw it


async def test_a_route_declared_first_for_the_same_path_still_wins() -> None:
    app = FastAPI()

    @app.websocket("/ws/{room}")
    async def mine(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "welcome", "rooms": [room], "connection_id": "mine"})
        await websocket.close()

    install_ws_manager(app, backend="memory://", admin_path=None)
    with ThreadServer(app) as server:
        ws, conn_id = await open_client(server, "lobby")
        assert conn_id == "mine"
        await ws.close()


async def test_request_telemetry_takes_the_ordinary_path() -> None:
    """With FastAPI's request telemetry in the scope, the router runs (it names the route)."""
    scopes: list[dict[str, Any]] = []
    app = app_with_hook(scopes)
    app.add_middleware(Recorder, seen=[], mark={"fastapi.telemetry": object()})
    with ThreadServer(app) as server:
        ws, _ = await open_client(server, "lobby")
        assert (await _ping(ws))["type"] == "pong"
        await ws.close()
    assert scopes[0]["stack"] is True


async def _ping(ws: Any) -> dict[str, Any]:
    await ws.send('{"type":"ping"}')
    return await recv_json(ws)
