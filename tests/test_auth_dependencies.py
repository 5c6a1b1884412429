"""``authenticate`` as a FastAPI dependency and ``dependencies=[Depends(...)]``, on a real
uvicorn server: the app's own cookie-reading ``get_current_user`` works unchanged,
``app.dependency_overrides`` replaces it, and a refusal (an ``HTTPException``, a
``WebSocketException``, a missing cookie) is HTTP 403 counted as ``auth``, never a 500 or
an ERROR log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query, WebSocketException
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import ThreadServer
from tests.ws_helpers import errors_logged, on_server, open_client, recv_json
from wsplugin import User, WebSocketManager, install_ws_manager

SESSIONS = {"s-ann": User("ann", {"name": "Ann"}), "s-bob": User("bob", {"name": "Bob"})}


def get_current_user(session: Annotated[str, Cookie()]) -> User:
    """The app's login, as its HTTP routes use it: the session cookie's user, else 401."""
    user = SESSIONS.get(session)
    if user is None:
        raise HTTPException(401, "not logged in")
    return user


def cookie_app(**options: Any) -> tuple[FastAPI, WebSocketManager]:
    app = FastAPI()

    @app.get("/me")
    def me(user: Annotated[User, Depends(get_current_user)]) -> dict[str, Any]:
        return {"id": user.id, "info": user.info}

    manager = install_ws_manager(app, backend="memory://", admin_path=None, **options)
    return app, manager


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, **kwargs)
    return info.value.response.status_code


def session_cookie(session: str) -> dict[str, Any]:
    return {"additional_headers": {"Cookie": f"session={session}"}}


@pytest.fixture
async def cookie_server() -> AsyncIterator[tuple[ThreadServer, WebSocketManager, FastAPI]]:
    app, manager = cookie_app(authenticate=get_current_user)
    with ThreadServer(app) as server:
        yield server, manager, app


async def test_the_apps_cookie_dependency_authenticates_unchanged(
    cookie_server: tuple[ThreadServer, WebSocketManager, FastAPI],
) -> None:
    server, manager, _ = cookie_server
    async with httpx.AsyncClient(base_url=server.url, cookies={"session": "s-ann"}) as http:
        me = await http.get("/me")  # the same dependency, in an HTTP route
    assert me.json() == {"id": "ann", "info": {"name": "Ann"}}
    ws, conn_id = await open_client(server, "lobby", **session_cookie("s-ann"))
    infos = await on_server(server, manager.connections())
    assert [(i.id, i.user, i.info) for i in infos] == [(conn_id, "ann", {"name": "Ann"})]
    await ws.close()


async def test_a_refusing_or_unsatisfied_dependency_is_403_counted_as_auth(
    cookie_server: tuple[ThreadServer, WebSocketManager, FastAPI], caplog: pytest.LogCaptureFixture,
) -> None:
    server, manager, _ = cookie_server
    with errors_logged(caplog) as errors:
        url = f"{server.ws_url}/ws/lobby"
        assert await refused_status(url, **session_cookie("s-nobody")) == 403  # HTTPException
        assert await refused_status(url) == 403  # no cookie: a validation error
    assert errors == []
    assert manager.tally.refused["auth"] == 2
    assert "s-nobody" not in caplog.text  # the value that failed is never logged
    assert await on_server(server, manager.connections()) == []


async def test_dependency_overrides_replace_the_apps_dependency_in_a_test(
    cookie_server: tuple[ThreadServer, WebSocketManager, FastAPI],
) -> None:
    server, manager, app = cookie_server
    app.dependency_overrides[get_current_user] = lambda: User("test-user")
    try:
        ws, _ = await open_client(server, "lobby")  # no cookie at all
        infos = await on_server(server, manager.connections())
        assert [i.user for i in infos] == ["test-user"]
        await ws.close()
    finally:
        app.dependency_overrides.clear()
    assert await refused_status(f"{server.ws_url}/ws/lobby") == 403


async def test_sub_dependencies_headers_query_and_the_room_are_resolved() -> None:
    seen: list[tuple[str, str | None, str]] = []

    async def authenticate(
        websocket: WebSocket,
        room: str,
        user: Annotated[User, Depends(get_current_user)],
        client: Annotated[str | None, Header()] = None,
        device: Annotated[str, Query()] = "web",
    ) -> User:
        assert websocket.scope["type"] == "websocket"
        seen.append((room, client, device))
        return user

    app, manager = cookie_app(authenticate=authenticate)
    with ThreadServer(app) as server:
        options = {"additional_headers": {"Cookie": "session=s-bob", "Client": "cli/1"}}
        ws, _ = await open_client(server, "lobby?device=phone", **options)
        assert seen == [("lobby", "cli/1", "phone")]
        assert [i.user for i in await on_server(server, manager.connections())] == ["bob"]
        await ws.close()


async def test_extra_dependencies_run_on_every_handshake_and_may_refuse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    closed: list[str] = []

    def api_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        calls.append(x_api_key or "")
        if x_api_key != "k-1":
            raise WebSocketException(code=1008, reason="bad key")

    async def db_session() -> AsyncIterator[str]:
        yield "db"
        closed.append("db")  # a generator dependency ends with the handshake

    app, manager = cookie_app(
        authenticate=lambda ws: ws.query_params.get("user"),  # the plain hook, unchanged
        dependencies=[Depends(api_key), Depends(db_session)])
    with ThreadServer(app) as server, errors_logged(caplog) as errors:
        headers = {"additional_headers": {"X-Api-Key": "k-1"}}
        ws, _ = await open_client(server, "lobby?user=ann", **headers)
        ws2, _ = await open_client(server, "news?user=bob", **headers)
        assert await refused_status(f"{server.ws_url}/ws/lobby?user=eve") == 403
        assert await refused_status(f"{server.ws_url}/ws/lobby?user=eve",
                                    additional_headers={"X-Api-Key": "nope"}) == 403
        assert calls == ["k-1", "k-1", "", "nope"]
        assert closed == ["db", "db"]  # the refused ones stopped before db_session
        users = sorted(str(i.user) for i in await on_server(server, manager.connections()))
        assert users == ["ann", "bob"]
        await ws.close()
        await ws2.close()
    assert errors == []
    assert manager.tally.refused["auth"] == 2


async def test_a_websocket_annotated_hook_still_runs_on_the_event_loop() -> None:
    """``authenticate(websocket: WebSocket)`` is called directly (no thread, no solving),
    as before: it may use the running loop."""
    import asyncio

    def authenticate(websocket: WebSocket) -> str:
        asyncio.get_running_loop()  # RuntimeError in a worker thread
        return websocket.query_params.get("user", "anon")

    app, manager = cookie_app(authenticate=authenticate)
    with ThreadServer(app) as server:
        ws, _ = await open_client(server, "lobby?user=zoe")
        assert [i.user for i in await on_server(server, manager.connections())] == ["zoe"]
        await ws.send('{"type":"ping","id":1}')
        assert await recv_json(ws) == {"type": "pong", "id": 1}
        await ws.close()


def test_dependencies_must_be_depends() -> None:
    with pytest.raises(ValueError, match="dependencies must be a list of Depends"):
        install_ws_manager(FastAPI(), dependencies=[lambda: None])  # type: ignore[list-item]
