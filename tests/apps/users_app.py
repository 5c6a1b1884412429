"""A worker of the users test cluster: ``?user=`` is the user, small JSON endpoints over the
manager. Configured from the environment (``WSPLUGIN_BACKEND``, ``WSPLUGIN_REDIS_PREFIX``,
``WSPLUGIN_REGISTRY_TTL``, ``WSPLUGIN_MAX_CONNECTIONS_PER_USER``...)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.websockets import WebSocket

from wsplugin import User, install_ws_manager


def authenticate(websocket: WebSocket) -> User | str:
    user = websocket.query_params.get("user")
    return User(user, {"name": user.title()}) if user else "anonymous"


app = FastAPI()
manager = install_ws_manager(app, admin_path=None, authenticate=authenticate)


@app.get("/connections")
async def connections(user: str | None = None) -> list[dict[str, Any]]:
    return [info.to_dict() for info in await manager.connections(user=user)]


@app.get("/refused")
async def refused() -> dict[str, int]:
    return dict(manager.tally.refused)
