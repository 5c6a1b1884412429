"""Shared pieces of the admin dashboard tests: an app with known credentials, clients."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect

from admin_ui import AdminAuth
from wsplugin import WebSocketManager, install_ws_manager

OPERATOR_TOKEN = "operator-token-123"
VIEWER_TOKEN = "viewer-token-456"
USER, PASSWORD = "alice", "wonderland"
ADMIN = "/ws-admin"
XSS = "<img src=x onerror=alert(1)>"

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}

CSRF = re.compile(r'data-csrf="([^"]+)"')


def admin_auth() -> AdminAuth:
    return AdminAuth(operators=[OPERATOR_TOKEN, (USER, PASSWORD)], viewers=[VIEWER_TOKEN])


def create_app(**options: Any) -> FastAPI:
    """A FastAPI app with the manager, the dashboard at /ws-admin, and known credentials."""
    app = FastAPI()
    options.setdefault("admin_auth", admin_auth())
    options.setdefault("backend", "memory://")
    install_ws_manager(app, **options)
    return app


def manager_of(app: Any) -> WebSocketManager:
    manager: WebSocketManager = app.state.ws_manager
    return manager


async def login(client: httpx.AsyncClient, token: str = OPERATOR_TOKEN) -> str:
    """Log in with the token form; returns the page's CSRF token (the cookie stays in client)."""
    response = await client.post(f"{ADMIN}/login", data={"token": token})
    assert response.status_code == 303, response.text
    page = await client.get(f"{ADMIN}/")
    assert page.status_code == 200
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


async def open_client(
    ws_url: str, room: str = "lobby", **options: Any
) -> tuple[ClientConnection, str]:
    """A websocket client in ``room``; returns it and its connection id (from ``welcome``)."""
    ws = await connect(f"{ws_url}/ws/{room}", **options)
    welcome = json.loads(await ws.recv(decode=True))
    assert welcome["type"] == "welcome"
    return ws, str(welcome["connection_id"])


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    """The next ``message`` frame (skipping joined/left/pong)."""
    while True:
        frame: dict[str, Any] = json.loads(await ws.recv(decode=True))
        if frame["type"] == "message":
            return frame


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream response into (event, data) pairs."""
    kind, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            yield kind, json.loads(data)
            kind, data = "message", ""


def raise_fd_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE (children inherit it); skip-free: fail if impossible."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "RLIMIT_NOFILE too low"


def __getattr__(name: str) -> Any:
    """``uvicorn tests.admin_helpers:scale_app``: an app built only when asked for."""
    if name == "scale_app":
        return create_app(rate_limit=None, client_publish=True,
                          authenticate=lambda ws: ws.query_params.get("user", "?"))
    raise AttributeError(name)


def identity_from_query(websocket: WebSocket) -> str:
    """An ``authenticate`` hook for tests: the identity is ``?user=``."""
    return websocket.query_params.get("user", "anonymous")
