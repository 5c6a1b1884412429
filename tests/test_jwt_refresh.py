"""Token expiry and in-band ``refresh`` on a real uvicorn server: the server closes 4001
``token expired`` once ``exp`` plus ``refresh_grace`` passes; a refresh keeps the same
connection (id, rooms, queue), is refused for another ``sub`` or a bad token (the old
expiry stays), and withdraws the rooms its ``rooms`` claim no longer allows."""

from __future__ import annotations

import time

import pytest

from tests.jwt_helpers import claims, closed_with, connect_with, jwt_server, rs_token
from tests.ws_helpers import on_server, recv_json, recv_type, send_json, wait_until


async def test_an_unrefreshed_token_closes_4001_after_exp_and_refresh_grace() -> None:
    with jwt_server(refresh_grace=0.2) as (server, manager):
        exp = time.time() + 2  # room for a slow handshake on a loaded machine
        ws, welcome = await connect_with(server, "lobby", rs_token(claims(ttl=None, exp=exp)))
        assert welcome["type"] == "welcome" and welcome["expires_in"] in (0, 1, 2)
        assert await closed_with(ws) == (4001, "token expired")
        assert time.time() >= exp + 0.2
        assert manager.tally.closes["4001"] == 1
        assert await on_server(server, manager.connections()) == []


async def test_a_refresh_keeps_the_connection_and_moves_its_expiry() -> None:
    with jwt_server(refresh_grace=0.2) as (server, manager):
        first_exp = time.time() + 3  # long enough to refresh in time on a loaded machine
        ws, welcome = await connect_with(server, "lobby",
                                         rs_token(claims("ann", ttl=None, exp=first_exp)))
        conn_id = welcome["connection_id"]
        await send_json(ws, {"type": "join", "room": "news", "id": 1})
        assert await recv_json(ws) == {"type": "joined", "room": "news", "id": 1}
        new_exp = time.time() + 120
        await send_json(ws, {"type": "refresh", "id": 7,
                             "token": rs_token(claims("ann", ttl=None, exp=new_exp))})
        refreshed = await recv_json(ws)
        assert refreshed["type"] == "refreshed" and refreshed["id"] == 7
        assert 110 <= refreshed["expires_in"] <= 120
        (info,) = await on_server(server, manager.connections())
        assert (info.id, info.rooms, info.expires_at) == (conn_id, ("lobby", "news"),
                                                          pytest.approx(new_exp))

        async def old_deadline_passed() -> bool:
            return time.time() > first_exp + 0.2 + 0.3

        await wait_until(old_deadline_passed, what="the first token's deadline")
        await send_json(ws, {"type": "ping", "id": 8})  # still the same, open connection
        assert await recv_json(ws) == {"type": "pong", "id": 8}
        await on_server(server, manager.broadcast("news", {"still": "here"}))
        assert (await recv_type(ws, "message"))["data"] == {"still": "here"}
        await ws.close()


async def test_a_refresh_for_another_sub_or_with_a_bad_token_changes_nothing() -> None:
    with jwt_server() as (server, manager):
        exp = time.time() + 60
        ws, _ = await connect_with(server, "lobby", rs_token(claims("ann", ttl=None, exp=exp)))
        await send_json(ws, {"type": "refresh", "id": 1,
                             "token": rs_token(claims("mallory", ttl=600))})
        error = await recv_json(ws)
        assert (error["type"], error["code"], error["id"]) == ("error", "forbidden", 1)
        await send_json(ws, {"type": "refresh", "id": 2,
                             "token": rs_token(claims("ann", ttl=-10))})
        error = await recv_json(ws)
        assert (error["code"], error["detail"], error["id"]) == ("unauthorized",
                                                                 "token expired", 2)
        await send_json(ws, {"type": "refresh", "id": 3, "token": 42})
        assert (await recv_json(ws))["code"] == "bad_request"
        (info,) = await on_server(server, manager.connections())
        assert info.expires_at == pytest.approx(exp)  # the old expiry stays
        await ws.close()


async def test_a_refresh_withdraws_rooms_its_token_no_longer_allows() -> None:
    with jwt_server() as (server, manager):
        ws, _ = await connect_with(server, "a-1", rs_token(claims(rooms=["a-*", "b-*"])))
        await send_json(ws, {"type": "join", "room": "b-1"})
        assert await recv_json(ws) == {"type": "joined", "room": "b-1"}
        await send_json(ws, {"type": "refresh", "id": 5,
                             "token": rs_token(claims(rooms=["a-*"]))})
        assert await recv_json(ws) == {"type": "left", "room": "b-1", "reason": "forbidden"}
        assert (await recv_json(ws))["type"] == "refreshed"
        (info,) = await on_server(server, manager.connections())
        assert info.rooms == ("a-1",)
        await send_json(ws, {"type": "join", "room": "b-2", "id": 6})
        assert (await recv_json(ws))["code"] == "forbidden"
        await ws.close()


async def test_refresh_is_not_a_command_without_tokens() -> None:
    from tests.ws_helpers import open_client, serve

    with serve() as (server, _):
        ws, _ = await open_client(server, "lobby")
        await send_json(ws, {"type": "refresh", "token": "x"})
        assert (await recv_json(ws))["code"] == "unknown_type"
        await ws.close()
