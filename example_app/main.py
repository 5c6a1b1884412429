"""The example chat: rooms, a user list and messages on wsplugin's managed endpoint.

Run it with ``scripts/example`` (or ``uvicorn example_app.main:app``). The backend comes from
``WSPLUGIN_BACKEND`` (default ``memory://``); with ``redis://...`` it runs on many workers.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from wsplugin import Connection, WebSocketManager, WSManager, install_ws_manager
from wsplugin.events import Event

logger = logging.getLogger("example_app")

STATIC = Path(__file__).parent / "static"
HEARTBEAT_SECONDS = 20.0
"""heartbeat_interval and heartbeat_timeout; scripts/example passes the same to uvicorn."""
MAX_NAME = 32
MAX_TEXT = 2000

RoomName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


def authenticate(websocket: WebSocket) -> str:
    """The identity is whatever ``?name=`` says: this is a demo, not a login."""
    name = websocket.query_params.get("name", "").strip()[:MAX_NAME]
    return name or "anonymous"


def on_message(connection: Connection, room: str, data: Any) -> dict[str, str]:
    """Accept ``{"text": "..."}`` only, and stamp the sender's name on it."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('send {"text": "..."}')
    text = data["text"].strip()[:MAX_TEXT]
    if not text:
        raise ValueError("empty message")
    return {"kind": "chat", "name": str(connection.identity), "text": text}


def announcement(body: Any) -> dict[str, Any]:
    """What ``POST /announce/{room}`` broadcasts: a text announcement, or the JSON as is."""
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return {"kind": "announce", "name": "server", "text": body["text"][:MAX_TEXT]}
    return {"kind": "announce", "name": "server", "data": body}


class Presence:
    """Tells a room who came and went, from the manager's events (each node its own).

    A disconnect is one ``disconnected`` event, so the rooms of each local connection are
    remembered from its ``joined``/``left`` events to announce who left where.
    """

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager
        self.rooms: dict[str, set[str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Event) -> None:
        conn_id = event.connection_id
        if conn_id is None or event.node != self.manager.node_id:
            return  # with Redis, the node that owns the connection announces it
        if event.kind == "joined" and event.room is not None:
            self.rooms.setdefault(conn_id, set()).add(event.room)
            self.announce(event.room, "joined", event.identity)
        elif event.kind == "left" and event.room is not None:
            self.rooms.get(conn_id, set()).discard(event.room)
            self.announce(event.room, "left", event.identity)
        elif event.kind == "disconnected":
            for room in sorted(self.rooms.pop(conn_id, ())):
                self.announce(room, "left", event.identity)

    def announce(self, room: str, what: str, identity: str | None) -> None:
        data = {"kind": "presence", "event": what, "name": str(identity)}
        task = asyncio.get_running_loop().create_task(self.tell(room, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def tell(self, room: str, data: dict[str, str]) -> None:
        try:
            await self.manager.broadcast(room, data)
        except Exception as exc:  # e.g. the broker is down: presence is best effort
            logger.warning("presence broadcast to %s failed: %s", room, exc)


def add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/rooms/{room}/members")
    async def members(room: RoomName, manager: WSManager) -> list[dict[str, Any]]:
        """Who is in ``room``, on every node."""
        infos = await manager.connections(room)
        return [{"id": info.id, "identity": info.identity} for info in infos]

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
    manager = install_ws_manager(
        app,
        authenticate=authenticate,
        on_message=on_message,
        client_publish=True,  # every member may chat; on_message checks each message
        heartbeat_interval=HEARTBEAT_SECONDS,
        heartbeat_timeout=HEARTBEAT_SECONDS,
        **options,
    )
    manager.events.subscribe(Presence(manager))
    return app


app = create_app()
