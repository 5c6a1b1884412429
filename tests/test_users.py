"""Users on one node: who a connection belongs to, ``send_user``/``kick_user``,
``connections(user=)`` and ``max_connections_per_user`` (real uvicorn, real clients)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support import ThreadServer
from tests.test_metrics import PATH, scrape, value
from tests.ws_helpers import (
    close_code,
    make_app,
    on_server,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import User, UserLimitReached, WebSocketManager, WSManager
from wsplugin.info import ConnectionInfo

XSS = "<img src=x onerror=alert(1)>"


def authenticate(websocket: WebSocket) -> Any:
    """``?user=`` with ``?as=``: a ``User`` (default, with ``?name=``), a plain ``str``,
    ``other`` (an identity that is no user), ``big`` (a User whose info is too large)."""
    query = websocket.query_params
    kind, user_id = query.get("as", "user"), query.get("user", "")
    if kind == "str":
        return user_id
    if kind == "other":
        return {"role": "guest"}
    if kind == "big":
        return User(user_id, {"bio": "x" * 2000})
    return User(user_id, {"name": query.get("name", user_id.title())})


def url(server: ThreadServer, room: str, **query: str) -> str:
    return f"{server.ws_url}/ws/{room}?{urlencode(query)}"


async def client(server: ThreadServer, room: str, **query: str) -> tuple[ClientConnection, str]:
    ws = await connect(url(server, room, **query))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, str(welcome["connection_id"])


async def refused(address: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(address)
    assert info.value.response.status_code == 403


async def listed(server: ThreadServer, manager: WebSocketManager, **filters: Any
                 ) -> list[ConnectionInfo]:
    found: list[ConnectionInfo] = await on_server(server, manager.connections(**filters))
    return found


async def nothing_but(ws: ClientConnection, marker: Any) -> list[Any]:
    """The data of every message up to ``marker`` (which the test sends last)."""
    seen = []
    while True:
        frame = await recv_type(ws, "message")
        seen.append(frame["data"])
        if frame["data"] == marker:
            return seen


async def test_authenticate_may_return_a_user_a_str_or_another_identity() -> None:
    with serve(authenticate=authenticate) as (server, manager):
        ws_user, id_user = await client(server, "lobby", user="alice", name="Alice")
        ws_str, id_str = await client(server, "lobby", user="bob", **{"as": "str"})
        ws_other, id_other = await client(server, "lobby", **{"as": "other"})
        infos = {info.id: info for info in await listed(server, manager)}
        alice, bob, guest = infos[id_user], infos[id_str], infos[id_other]
        assert (alice.user, alice.info, alice.identity) == ("alice", {"name": "Alice"}, "alice")
        assert (bob.user, bob.info, bob.identity) == ("bob", None, "bob")
        assert (guest.user, guest.info, guest.identity) == (None, None, "{'role': 'guest'}")
        assert alice.to_dict()["user"] == "alice" and alice.to_dict()["info"] == {"name": "Alice"}
        conns = manager.hub.connections
        assert (conns[id_user].user_id, conns[id_str].user_id, conns[id_other].user_id) == (
            "alice", "bob", None)
        assert conns[id_user].user == User("alice", {"name": "Alice"})
        for ws in (ws_user, ws_str, ws_other):
            await ws.close()


async def test_a_too_large_info_refuses_the_handshake_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wsplugin")
    with serve(authenticate=authenticate, max_user_info_bytes=1024) as (server, manager):
        await refused(url(server, "lobby", user="carol", **{"as": "big"}))
        reasons = [r.getMessage() for r in caplog.records if r.name == "wsplugin"]
        assert any("max_user_info_bytes" in reason for reason in reasons), reasons
        assert manager.tally.refused["auth"] == 1
        assert manager.tally.accepted == 0
        ws, _ = await client(server, "lobby", user="carol")  # a small info is fine
        await ws.close()


async def test_a_message_carries_the_user_of_its_publisher() -> None:
    with serve(authenticate=authenticate, client_publish=True) as (server, manager):
        alice, alice_id = await client(server, "chat", user="alice")
        guest, guest_id = await client(server, "chat", **{"as": "other"})
        await send_json(alice, {"type": "publish", "data": "from alice"})
        frame = await recv_type(guest, "message")
        assert frame == {"type": "message", "room": "chat", "data": "from alice",
                         "sender": alice_id, "user": "alice"}
        assert await recv_type(alice, "message") == frame  # her own echo, the same frame
        await send_json(guest, {"type": "publish", "data": "from a guest"})
        frame = await recv_type(alice, "message")
        assert frame == {"type": "message", "room": "chat", "data": "from a guest",
                         "sender": guest_id}  # no user: no "user" field
        await on_server(server, manager.broadcast("chat", "from the server"))
        frame = await recv_type(alice, "message")
        assert frame["data"] == "from the server" and "user" not in frame
        await alice.close()
        await guest.close()


async def test_send_user_and_kick_user_reach_every_connection_of_the_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(authenticate=authenticate) as (server, manager):
        a1, a1_id = await client(server, "red", user="alice")
        a2, a2_id = await client(server, "blue", user="alice")
        bob, bob_id = await client(server, "red", user="bob")
        kinds: list[tuple[str, str | None]] = []
        manager.events.subscribe(lambda event: kinds.append((event.kind, event.connection_id)))

        assert await on_server(server, manager.send_user("alice", {"hi": "alice"})) == 2
        for ws in (a1, a2):
            assert await recv_json(ws) == {"type": "message", "room": None,
                                           "data": {"hi": "alice"}, "sender": None}
        assert await on_server(server, manager.send_user("nobody", "x")) == 0
        assert await on_server(server, manager.send(bob_id, "marker")) is True
        assert await nothing_but(bob, "marker") == ["marker"]  # bob got nothing for alice

        kicked = await on_server(server, manager.kick_user("alice", reason="bye"))
        assert kicked == 2
        for ws in (a1, a2):
            assert await close_code(ws) == 4000
            assert ws.close_reason == "bye"
        assert sorted(str(cid) for kind, cid in kinds if kind == "kicked") == sorted(
            [a1_id, a2_id])
        assert await on_server(server, manager.kick_user("alice")) == 0
        assert await on_server(server, manager.send(bob_id, "still here")) is True
        assert (await recv_json(bob))["data"] == "still here"
        with pytest.raises(ValueError, match="user id"):
            await on_server(server, manager.send_user("", "x"))
        await bob.close()


async def test_connections_filter_by_user_through_the_hub_index() -> None:
    with serve(authenticate=authenticate) as (server, manager):
        a1, a1_id = await client(server, "red", user="alice")
        a2, a2_id = await client(server, "blue", user="alice")
        bob, _ = await client(server, "red", user="bob")
        guest, _ = await client(server, "red", **{"as": "other"})
        assert {i.id for i in await listed(server, manager, user="alice")} == {a1_id, a2_id}
        assert [i.id for i in await listed(server, manager, room="red", user="alice")] == [a1_id]
        assert await listed(server, manager, user="nobody") == []
        assert set(manager.hub.users) == {"alice", "bob"}  # the per-user index
        assert set(manager.hub.users["alice"]) == {a1_id, a2_id}
        for ws in (a1, a2, bob, guest):
            await ws.close()
        await wait_until(lambda: _empty(manager), what="every connection gone")
        assert manager.hub.users == {}  # nothing is left behind per user
        assert len(manager.user_slots) == 0


async def _empty(manager: WebSocketManager) -> bool:
    return not manager.hub.connections


async def test_max_connections_per_user_refuses_beyond_the_limit_and_frees_a_slot() -> None:
    with serve(authenticate=authenticate, max_connections_per_user=2,
               metrics_path=PATH) as (server, manager):
        first, _ = await client(server, "lobby", user="alice")
        second, _ = await client(server, "other", user="alice")
        await refused(url(server, "lobby", user="alice"))
        await refused(url(server, "lobby", user="alice", **{"as": "str"}))  # the same user
        bob, _ = await client(server, "lobby", user="bob")  # another user is not affected
        guests = [await client(server, "lobby", **{"as": "other"}) for _ in range(3)]
        assert manager.tally.refused["user_limit"] == 2
        samples = await scrape(server)
        assert value(samples, "wsplugin_connections_refused_total", reason="user_limit") == 2

        await first.close()
        await wait_until(lambda: _count(server, manager, "alice", 1), what="a free slot")
        third, _ = await client(server, "lobby", user="alice")
        await refused(url(server, "lobby", user="alice"))
        assert manager.tally.refused["user_limit"] == 3
        for ws in (second, third, bob, *(g for g, _ in guests)):
            await ws.close()


async def _count(server: ThreadServer, manager: WebSocketManager, user: str, n: int) -> bool:
    return len(await listed(server, manager, user=user)) == n


async def test_concurrent_handshakes_cannot_pass_the_limit_together() -> None:
    with serve(authenticate=authenticate, max_connections_per_user=3) as (server, manager):

        async def attempt() -> ClientConnection | None:
            try:
                ws = await connect(url(server, "lobby", user="alice"))
            except InvalidStatus as exc:
                assert exc.response.status_code == 403
                return None
            assert (await recv_json(ws))["type"] == "welcome"
            return ws

        results = await asyncio.gather(*(attempt() for _ in range(12)))
        accepted = [ws for ws in results if ws is not None]
        assert len(accepted) == 3
        assert manager.tally.refused["user_limit"] == 9
        assert len(await listed(server, manager, user="alice")) == 3
        assert len(manager.user_slots) == 0  # no claim left behind by the refused ones
        for ws in accepted:
            await ws.close()


def route_app(limit: int) -> tuple[Any, WebSocketManager, list[UserLimitReached]]:
    """A user-owned route (``manager.connect``) beside the managed endpoint."""
    app, manager = make_app(authenticate=authenticate, max_connections_per_user=limit)
    errors: list[UserLimitReached] = []

    @app.websocket("/own")
    async def own(websocket: WebSocket, ws_manager: WSManager) -> None:
        if websocket.query_params.get("accept_first"):
            await websocket.accept()
        user = User(websocket.query_params["user"], {"via": "route"})
        try:
            async with ws_manager.connect(websocket, rooms=["lobby"], identity=user) as conn:
                await conn.send({"hello": conn.id})
                async for _ in conn:
                    pass
        except UserLimitReached as exc:
            errors.append(exc)

    return app, manager, errors


async def test_user_routes_count_toward_the_limit_and_raise_a_clear_error() -> None:
    app, manager, errors = route_app(limit=2)
    with ThreadServer(app) as server:
        own = await connect(f"{server.ws_url}/own?user=dana")
        assert "hello" in (await recv_json(own))["data"]
        managed, _ = await client(server, "lobby", user="dana")
        with pytest.raises(InvalidStatus) as info:  # not accepted yet: HTTP 403
            await connect(f"{server.ws_url}/own?user=dana")
        assert info.value.response.status_code == 403
        late = await connect(f"{server.ws_url}/own?user=dana&accept_first=1")
        assert await close_code(late) == 1008  # the route accepted first: closed 1008
        assert late.close_reason == "too many connections for this user"
        await refused(url(server, "lobby", user="dana"))
        assert [(e.user_id, e.limit) for e in errors] == [("dana", 2), ("dana", 2)]
        assert "max_connections_per_user" in str(errors[0]) and "'dana'" in str(errors[0])
        assert manager.tally.refused["user_limit"] == 3
        infos = await listed(server, manager, user="dana")
        assert sorted(str(i.info) for i in infos) == ["{'name': 'Dana'}", "{'via': 'route'}"]
        await own.close()
        await wait_until(lambda: _count(server, manager, "dana", 1), what="a free slot")
        again = await connect(f"{server.ws_url}/own?user=dana")
        assert "hello" in (await recv_json(again))["data"]
        for ws in (again, managed):
            await ws.close()


async def test_hostile_user_ids_and_info_are_plain_data() -> None:
    with serve(authenticate=authenticate, client_publish=True) as (server, manager):
        ws, conn_id = await client(server, "lobby", user=XSS, name=XSS)
        await send_json(ws, {"type": "publish", "data": 1})
        frame = await recv_type(ws, "message")
        assert frame["user"] == XSS
        (info,) = await listed(server, manager, user=XSS)
        assert (info.id, info.user, info.info) == (conn_id, XSS, {"name": XSS})
        assert json.loads(json.dumps(info.to_dict()))["info"] == {"name": XSS}
        assert await on_server(server, manager.kick_user(XSS)) == 1
        assert await close_code(ws) == 4000
