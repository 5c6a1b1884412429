"""A worker of the test cluster: the managed rooms plus small JSON endpoints over the manager.

Configured from the environment (``WSPLUGIN_BACKEND``, ``WSPLUGIN_REDIS_PREFIX``,
``WSPLUGIN_REGISTRY_TTL``...), so several uvicorn processes form one cluster through Redis.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Body, FastAPI

from wsplugin import install_ws_manager

app = FastAPI()
manager = install_ws_manager(app, admin_path=None, client_publish=True)


@app.post("/announce/{room}")
async def announce(room: str, data: Any = Body(...)) -> dict[str, int]:
    return {"delivered": await manager.broadcast(room, data)}


@app.post("/announce-all")
async def announce_all(data: Any = Body(...)) -> dict[str, int]:
    return {"delivered": await manager.broadcast_all(data)}


@app.post("/send/{connection_id}")
async def send(connection_id: str, data: Any = Body(...)) -> dict[str, bool]:
    return {"found": await manager.send(connection_id, data)}


@app.post("/kick/{connection_id}")
async def kick(connection_id: str, reason: str = "") -> dict[str, bool]:
    return {"found": await manager.kick(connection_id, reason=reason)}


@app.post("/join/{connection_id}/{room}")
async def join(connection_id: str, room: str) -> dict[str, bool]:
    return {"found": await manager.join(connection_id, room)}


@app.post("/leave/{connection_id}/{room}")
async def leave(connection_id: str, room: str) -> dict[str, bool]:
    return {"found": await manager.leave(connection_id, room)}


@app.get("/connections")
async def connections(room: str | None = None) -> list[dict[str, Any]]:
    return [info.to_dict() for info in await manager.connections(room)]


@app.get("/rooms")
async def rooms() -> dict[str, int]:
    return await manager.rooms()


@app.get("/nodes")
async def nodes() -> list[dict[str, Any]]:
    return await manager.nodes()


@app.get("/stats")
async def stats() -> dict[str, int]:
    return manager.local_stats()


@app.get("/whoami")
async def whoami() -> dict[str, Any]:
    return {"node": manager.node_id, "pid": os.getpid()}
