"""The Quick-start app, for running the plugin under each ASGI server (``tests/test_servers.py``).

A client publish is echoed (``on_message`` set, so publishing is allowed whatever the
default), ``POST /broadcast/{room}`` calls ``manager.broadcast`` and ``POST /kick/{id}``
calls ``manager.kick``. ``GET /fast/{id}`` says whether that connection took the fast path.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI, WebSocket

from wsplugin import WSManager, install_ws_manager
from wsplugin.delivery.uvicorn_writer import UvicornWriter

app = FastAPI()
manager = install_ws_manager(
    app, admin_path=None, rate_limit=None, on_message=lambda conn, room, data: data
)


@app.post("/broadcast/{room}")
async def broadcast(room: str, ws: WSManager, data: Any = Body(...)) -> dict[str, int]:
    return {"delivered": await ws.broadcast(room, data)}


@app.post("/kick/{connection_id}")
async def kick(connection_id: str, ws: WSManager, reason: str = "") -> dict[str, bool]:
    return {"found": await ws.kick(connection_id, reason=reason)}


@app.get("/fast/{connection_id}")
async def fast(connection_id: str, ws: WSManager) -> dict[str, bool]:
    """``found``: the connection is on this worker; ``fast``: it takes the fast path."""
    conn = ws.hub.connections.get(connection_id)
    fast = conn is not None and isinstance(conn.frames, UvicornWriter)
    return {"found": conn is not None, "fast": fast}


@app.websocket("/own/{room}")
async def own(websocket: WebSocket, room: str, ws: WSManager) -> None:
    """A user-owned route handed to the manager: welcome, then echo into the room."""
    async with ws.connect(websocket, rooms=[room]) as conn:
        await conn.send({"type": "welcome", "connection_id": conn.id})
        async for frame in conn:
            await ws.broadcast(room, frame)


@app.post("/flood/{room}")
async def flood(room: str, ws: WSManager, count: int = 100, size: int = 65536) -> dict[str, int]:
    """``count`` messages of ``size`` bytes: enough to fill the buffers of a client that
    stopped reading."""
    payload = "x" * size
    delivered = 0
    for _ in range(count):
        delivered += await ws.broadcast(room, payload)
    return {"delivered": delivered}
