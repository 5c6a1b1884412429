"""get_ws_manager and the WSManager alias, in HTTP and websocket routes."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.testclient import TestClient

from tests.support import ThreadServer
from tests.ws_helpers import make_app, open_client, recv_json
from wsplugin import WebSocketManager, WSManager, get_ws_manager


def add_announce_routes(app: FastAPI) -> None:
    @app.post("/announce/{room}")
    async def announce(
        room: str, text: str, manager: Annotated[WebSocketManager, Depends(get_ws_manager)]
    ) -> dict[str, int]:
        return {"delivered": await manager.broadcast(room, {"announce": text})}

    @app.post("/alias/{room}")
    async def alias(room: str, text: str, manager: WSManager) -> dict[str, int]:
        return {"delivered": await manager.broadcast(room, {"alias": text})}


def test_broadcast_from_http_route_through_depends() -> None:
    app, _ = make_app()
    add_announce_routes(app)
    with TestClient(app) as client, client.websocket_connect("/ws/news") as ws:
        ws.receive_json()
        response = client.post("/announce/news", params={"text": "hello"})
        assert response.json() == {"delivered": 1}
        assert ws.receive_json() == {"type": "message", "room": "news",
                                     "data": {"announce": "hello"}, "sender": None}


def test_broadcast_from_http_route_through_wsmanager_alias() -> None:
    app, _ = make_app()
    add_announce_routes(app)
    with TestClient(app) as client, client.websocket_connect("/ws/news") as ws:
        ws.receive_json()
        assert client.post("/alias/news", params={"text": "hi"}).json() == {"delivered": 1}
        assert ws.receive_json()["data"] == {"alias": "hi"}
        assert client.post("/alias/empty", params={"text": "hi"}).json() == {"delivered": 0}


async def test_broadcast_from_http_route_on_a_real_server() -> None:
    app, _ = make_app()
    add_announce_routes(app)
    with ThreadServer(app) as server:
        clients = [(await open_client(server, "news"))[0] for _ in range(3)]
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/announce/news", params={"text": "live"})
        assert response.json() == {"delivered": 3}
        for ws in clients:
            assert (await recv_json(ws))["data"] == {"announce": "live"}
            await ws.close()


def test_manager_in_a_websocket_route() -> None:
    app, manager = make_app()
    seen: list[WebSocketManager] = []

    @app.websocket("/custom")
    async def custom(websocket: WebSocket, ws_manager: WSManager) -> None:
        seen.append(ws_manager)
        await websocket.accept()
        await websocket.send_json({"rooms": await ws_manager.rooms()})
        await websocket.close()

    with TestClient(app) as client, client.websocket_connect("/custom") as ws:
        assert ws.receive_json() == {"rooms": {}}
    assert seen == [manager]


def test_without_install_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/x")
    async def route(manager: WSManager) -> dict[str, Any]:
        return {}

    client = TestClient(app, raise_server_exceptions=True)
    with pytest.raises(RuntimeError, match="install_ws_manager"):
        client.get("/x")


def test_dependency_can_be_overridden_in_tests() -> None:
    class FakeManager:
        def __init__(self) -> None:
            self.sent: list[tuple[str, Any]] = []

        async def broadcast(self, room: str, data: Any) -> int:
            self.sent.append((room, data))
            return 42

    app, _ = make_app()
    add_announce_routes(app)
    fake = FakeManager()
    app.dependency_overrides[get_ws_manager] = lambda: fake
    with TestClient(app) as client:
        assert client.post("/announce/r", params={"text": "t"}).json() == {"delivered": 42}
    assert fake.sent == [("r", {"announce": "t"})]
