"""The textbook FastAPI ConnectionManager: ``for ws in room: await ws.send_text(m)``.

Minimal protocol (as the raw server): every text frame a client sends on ``/ws/{room}`` is
relayed as is to every member of the room, the sender included, one awaited send at a time.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.servers._common import parser, run_uvicorn


class ConnectionManager:
    def __init__(self) -> None:
        self.rooms: dict[str, list[WebSocket]] = defaultdict(list)

    async def connect(self, room: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.rooms[room].append(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        self.rooms[room].remove(websocket)

    async def broadcast(self, room: str, message: str) -> None:
        for connection in self.rooms[room]:
            await connection.send_text(message)


app = FastAPI()
manager = ConnectionManager()


@app.websocket("/ws/{room}")
async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
    await manager.connect(room, websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(room, data)
    except WebSocketDisconnect:
        manager.disconnect(room, websocket)


if __name__ == "__main__":
    run_uvicorn(app, parser(__doc__ or "").parse_args())
