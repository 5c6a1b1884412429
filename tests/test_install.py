"""install_ws_manager(): mounting, the app's own lifespan, settings, one manager per app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from wsplugin import WebSocketManager, install_ws_manager


def lifespan_app(events: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        app.state.ready = True
        yield {"greeting": "hello from lifespan"}
        # the manager is still usable while the app shuts down
        await app.state.ws_manager.broadcast("lobby", "bye")
        events.append("shutdown")

    return FastAPI(lifespan=lifespan)


def add_routes(app: FastAPI) -> None:
    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {"ready": request.app.state.ready, "greeting": request.state.greeting}


def check_running(client: TestClient) -> None:
    assert client.get("/state").json() == {"ready": True, "greeting": "hello from lifespan"}
    with client.websocket_connect("/ws/lobby") as ws:
        assert ws.receive_json()["type"] == "welcome"
        ws.send_json({"type": "ping", "id": 1})
        assert ws.receive_json() == {"type": "pong", "id": 1}


def test_app_lifespan_runs_with_manager_installed_after_routes() -> None:
    events: list[str] = []
    app = lifespan_app(events)
    add_routes(app)
    install_ws_manager(app, backend="memory://", admin_path=None)
    with TestClient(app) as client:
        assert events == ["startup"]
        check_running(client)
    assert events == ["startup", "shutdown"]


def test_app_lifespan_runs_with_manager_installed_before_routes() -> None:
    events: list[str] = []
    app = lifespan_app(events)
    install_ws_manager(app, backend="memory://", admin_path=None)
    add_routes(app)
    with TestClient(app) as client:
        assert events == ["startup"]
        check_running(client)
    assert events == ["startup", "shutdown"]


def test_installing_twice_is_a_clear_error() -> None:
    app = FastAPI()
    first = install_ws_manager(app, backend="memory://", admin_path=None)
    with pytest.raises(RuntimeError, match="already"):
        install_ws_manager(app, backend="memory://", admin_path=None)
    assert app.state.ws_manager is first
    routes = [getattr(r, "path", "") for r in app.router.routes]
    assert routes.count("/ws/{room}") == 1


def test_manager_is_app_state_ws_manager() -> None:
    app = FastAPI()
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    assert isinstance(manager, WebSocketManager)
    assert app.state.ws_manager is manager


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_queue_messages", 0),
        ("slow_consumer", "block"),
        ("rate_limit", (5, -1.0)),
        ("prefix", "ws"),
        ("heartbeat_timeout", 0),
        ("authorize", "yes"),
    ],
)
def test_bad_settings_fail_at_install_time(name: str, value: Any) -> None:
    app = FastAPI()
    with pytest.raises(ValueError, match=name):
        install_ws_manager(app, backend="memory://", admin_path=None, **{name: value})
    assert getattr(app.state, "ws_manager", None) is None


def test_unknown_backend_fails_at_install_time() -> None:
    with pytest.raises(ValueError):
        install_ws_manager(FastAPI(), backend="carrier-pigeon://", admin_path=None)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSPLUGIN_PREFIX", "/live")
    monkeypatch.setenv("WSPLUGIN_MAX_ROOMS_PER_CONNECTION", "3")
    monkeypatch.setenv("WSPLUGIN_ECHO_TO_SENDER", "false")
    app = FastAPI()
    manager = install_ws_manager(app, backend="memory://", admin_path=None)
    assert manager.settings.prefix == "/live"
    assert manager.settings.max_rooms_per_connection == 3
    assert manager.settings.echo_to_sender is False
    with TestClient(app) as client, client.websocket_connect("/live/r1") as ws:
        assert ws.receive_json()["rooms"] == ["r1"]


def test_bad_environment_variable_fails_at_install_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSPLUGIN_MAX_MESSAGE_BYTES", "huge")
    with pytest.raises(ValueError, match="WSPLUGIN_MAX_MESSAGE_BYTES"):
        install_ws_manager(FastAPI(), backend="memory://", admin_path=None)


def test_plain_starlette_app_works() -> None:
    async def count(request: Request) -> JSONResponse:
        sent = await request.app.state.ws_manager.broadcast("news", {"n": 1})
        return JSONResponse({"sent": sent})

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), Route("/count", count, methods=["POST"])])
    install_ws_manager(app, backend="memory://", admin_path=None)
    with TestClient(app) as client, client.websocket_connect("/ws/news") as ws:
        assert ws.receive_json()["type"] == "welcome"
        assert client.get("/").text == "home"
        assert client.post("/count").json() == {"sent": 1}
        assert ws.receive_json() == {"type": "message", "room": "news", "data": {"n": 1},
                                     "sender": None}


def test_custom_prefix_and_health_route() -> None:
    app = FastAPI()
    install_ws_manager(app, backend="memory://", admin_path=None, prefix="/rt/rooms",
                       health_path="/healthz")
    with TestClient(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        with client.websocket_connect("/rt/rooms/abc") as ws:
            assert ws.receive_json()["rooms"] == ["abc"]


def test_health_route_can_be_turned_off() -> None:
    app = FastAPI()
    install_ws_manager(app, backend="memory://", admin_path=None, health_path=None)
    with TestClient(app) as client:
        assert client.get("/ws-health").status_code == 404
