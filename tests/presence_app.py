"""The app the browser client's presence tests run in a uvicorn subprocess
(``tests.presence_app:app``).

``authenticate`` makes ``?user=ann`` the user ``ann`` with info ``{"name": "Ann"}`` (no
``user``: a connection without a user). Presence rooms come from ``WSPLUGIN_PRESENCE`` (set by
the tests), client publishing is on. Routes: a blank page that imports the served client,
``GET /presence/{room}`` and ``GET /presence_stats/{room}`` (the manager's view), and
``POST /drop/{connection_id}`` (the server closes that connection with 1012, as a restart
does, so its client reconnects).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.websockets import WebSocket

from tests.client_app import PAGE
from wsplugin import CloseCode, User, WSManager, install_ws_manager


def authenticate(websocket: WebSocket) -> User | object:
    user = websocket.query_params.get("user")
    return User(user, {"name": user.title()}) if user else object()


app = FastAPI()
install_ws_manager(app, authenticate=authenticate, client_publish=True)


@app.get("/page")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.get("/favicon.ico")
async def favicon() -> Response:  # no 404 on the console
    return Response(status_code=204)


@app.get("/presence/{room}")
async def presence(room: str, manager: WSManager) -> dict[str, Any]:
    users = await manager.presence(room)
    return {user: {"info": p.info, "connections": p.connections} for user, p in users.items()}


@app.get("/presence_stats/{room}")
async def presence_stats(room: str, manager: WSManager) -> dict[str, int]:
    stats = await manager.presence_stats(room)
    return {"users": stats.users, "connections": stats.connections}


@app.post("/drop/{connection_id}")
async def drop(connection_id: str, manager: WSManager) -> dict[str, bool]:
    conn = manager.hub.connections.get(connection_id)
    if conn is not None:
        conn.close(CloseCode.SERVICE_RESTART, "dropped by the test")
    return {"dropped": conn is not None}
