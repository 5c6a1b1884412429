"""The example chat: rooms, who is online and messages on wsplugin's managed endpoint.

Run it with ``scripts/example`` (or ``uvicorn example_app.main:app``). The backend comes from
``WSPLUGIN_BACKEND`` (default ``memory://``); with ``redis://...`` it runs on many workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from wsplugin import Connection, Presence, User, WSManager, install_ws_manager

STATIC = Path(__file__).parent / "static"
HEARTBEAT_SECONDS = 20.0
"""heartbeat_interval and heartbeat_timeout; scripts/example passes the same to uvicorn."""
MAX_NAME = 32
MAX_TEXT = 2000
PRESENCE = {"*": Presence(join_leave=True, grace=5.0)}
"""Every room tells its members who is online: one entry per name, however many tabs."""

RoomName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


def authenticate(websocket: WebSocket) -> User:
    """The user is whatever ``?name=`` says (this is a demo, not a login): every tab and
    device with one name is one user in the rooms' presence."""
    name = websocket.query_params.get("name", "").strip()[:MAX_NAME] or "anonymous"
    return User(name, {"name": name})


def on_message(connection: Connection, room: str, data: Any) -> dict[str, str]:
    """Accept ``{"text": "..."}`` only, and stamp the sender's name on it."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('send {"text": "..."}')
    text = data["text"].strip()[:MAX_TEXT]
    if not text:
        raise ValueError("empty message")
    return {"kind": "chat", "name": connection.user_id or "anonymous", "text": text}


def announcement(body: Any) -> dict[str, Any]:
    """What ``POST /announce/{room}`` broadcasts: a text announcement, or the JSON as is."""
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return {"kind": "announce", "name": "server", "text": body["text"][:MAX_TEXT]}
    return {"kind": "announce", "name": "server", "data": body}


def add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.post("/announce/{room}")
    async def announce(
        room: RoomName, manager: WSManager, body: Annotated[Any, Body()] = None
    ) -> dict[str, Any]:
        """Broadcast to ``room``; returns how many local connections it was queued for."""
        delivered = await manager.broadcast(room, announcement(body))
        return {"room": room, "delivered": delivered}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def create_app(**options: Any) -> FastAPI:
    """The chat app; ``options`` go to ``install_ws_manager`` (tests pass ``backend=``)."""
    app = FastAPI(title="wsplugin example chat")
    add_routes(app)
    settings: dict[str, Any] = {
        "authenticate": authenticate,
        "on_message": on_message,
        "client_publish": True,  # every member may chat; on_message checks each message
        "presence": PRESENCE,  # the page's member list: the client keeps it in sync
        "heartbeat_interval": HEARTBEAT_SECONDS,
        "heartbeat_timeout": HEARTBEAT_SECONDS,
    }
    install_ws_manager(app, **{**settings, **options})
    return app


app = create_app()
