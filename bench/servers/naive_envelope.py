"""The naive manager speaking wsplugin's JSON envelope: the fair baseline for its cost.

Same textbook loop (``for ws in room: await ws.send_text(m)``) but with wsplugin's wire
protocol: a ``welcome`` frame first, ``{"type": "publish", "data": ...}`` in, and
``{"type": "message", "room", "data", "sender"}`` out, encoded once per publish.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.servers._common import parser, run_uvicorn


class ConnectionManager:
    def __init__(self) -> None:
        self.rooms: dict[str, list[WebSocket]] = defaultdict(list)

    async def connect(self, room: str, websocket: WebSocket, connection_id: str) -> None:
        await websocket.accept()
        welcome = {"type": "welcome", "connection_id": connection_id, "rooms": [room]}
        await websocket.send_text(json.dumps(welcome))
        self.rooms[room].append(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        self.rooms[room].remove(websocket)

    async def broadcast(self, room: str, data: Any, sender: str) -> None:
        message = json.dumps({"type": "message", "room": room, "data": data, "sender": sender})
        for connection in self.rooms[room]:
            await connection.send_text(message)


app = FastAPI()
manager = ConnectionManager()


@app.websocket("/ws/{room}")
async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
    connection_id = uuid.uuid4().hex
    await manager.connect(room, websocket, connection_id)
    try:
        while True:
            command = json.loads(await websocket.receive_text())
            if command.get("type") == "publish":
                target = command.get("room", room)
                await manager.broadcast(target, command.get("data"), connection_id)
    except WebSocketDisconnect:
        manager.disconnect(room, websocket)


if __name__ == "__main__":
    run_uvicorn(app, parser(__doc__ or "").parse_args())
