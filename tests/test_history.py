"""History rooms and recovery with the in-memory backend: real uvicorn, real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ThreadServer
from tests.ws_helpers import abort, on_server, recv_json, send_json, serve
from wsplugin import History, WebSocketManager
from wsplugin.config import build_settings

HISTORY = {"h-*": History(size=20, ttl=60)}


def echo(conn: Any, room: str, data: Any) -> Any:
    return data


def history_server(**options: Any) -> Any:
    options.setdefault("history", HISTORY)
    options.setdefault("on_message", echo)
    return serve(**options)


async def welcome(server: ThreadServer, room: str, query: str = "") -> tuple[ClientConnection,
                                                                            dict[str, Any]]:
    ws = await connect(f"{server.ws_url}/ws/{room}{query}")
    frame = await recv_json(ws)
    assert frame["type"] == "welcome", frame
    return ws, frame


async def messages(ws: ClientConnection, count: int, seconds: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` frames, which must all be messages."""
    frames = [await recv_json(ws, seconds) for _ in range(count)]
    assert all(f["type"] == "message" for f in frames), frames
    return frames


async def silent(ws: ClientConnection, seconds: float = 0.2) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def broadcast(server: ThreadServer, manager: WebSocketManager, room: str,
                    values: range) -> None:
    for value in values:
        await on_server(server, manager.broadcast(room, value))


async def test_welcome_and_messages_carry_the_position() -> None:
    with history_server() as (server, manager):
        ws, hello = await welcome(server, "h-1")
        assert (hello["offset"], len(hello["epoch"])) == (0, 8)
        plain = await connect(f"{server.ws_url}/ws/plain")
        raw_welcome = json.loads(await plain.recv())
        assert set(raw_welcome) == {"type", "connection_id", "rooms"}
        await broadcast(server, manager, "h-1", range(1, 4))
        got = await messages(ws, 3)
        assert [(f["offset"], f["data"]) for f in got] == [(1, 1), (2, 2), (3, 3)]
        assert got[0] == {"type": "message", "room": "h-1", "data": 1, "sender": None,
                          "offset": 1}
        await on_server(server, manager.broadcast("plain", "x"))
        assert await plain.recv() == '{"type":"message","room":"plain","data":"x","sender":null}'
        again, hello2 = await welcome(server, "h-1")
        assert (hello2["epoch"], hello2["offset"]) == (hello["epoch"], 3)
        for client in (ws, plain, again):
            await client.close()


async def test_reconnect_after_a_reset_recovers_exactly_what_was_missed() -> None:
    with history_server() as (server, manager):
        ws, hello = await welcome(server, "h-orders")
        await broadcast(server, manager, "h-orders", range(1, 3))
        last = (await messages(ws, 2))[-1]
        await abort(ws)  # TCP reset
        await broadcast(server, manager, "h-orders", range(3, 10))
        back, reply = await welcome(server, "h-orders",
                                    f"?epoch={hello['epoch']}&offset={last['offset']}")
        assert (reply["recovered"], reply["offset"], reply["epoch"]) == (True, 9, hello["epoch"])
        got = await messages(back, 7)
        assert [f["offset"] for f in got] == list(range(3, 10))
        assert [f["data"] for f in got] == list(range(3, 10))
        await broadcast(server, manager, "h-orders", range(10, 12))
        assert [f["offset"] for f in await messages(back, 2)] == [10, 11]
        assert await silent(back)
        await back.close()


async def test_join_recovers_too_and_plain_joins_are_unchanged() -> None:
    with history_server() as (server, manager):
        ws, _ = await welcome(server, "lobby")
        await send_json(ws, {"type": "join", "room": "h-a", "id": 1})
        joined = await recv_json(ws)
        assert joined["type"] == "joined" and joined["id"] == 1 and "recovered" not in joined
        epoch = joined["epoch"]
        await broadcast(server, manager, "h-a", range(1, 6))
        await messages(ws, 5)
        await send_json(ws, {"type": "leave", "room": "h-a"})
        assert (await recv_json(ws))["type"] == "left"
        await broadcast(server, manager, "h-a", range(6, 9))
        await send_json(ws, {"type": "join", "room": "h-a", "epoch": epoch, "offset": 5})
        joined = await recv_json(ws)
        assert (joined["recovered"], joined["offset"]) == (True, 8)
        assert [f["data"] for f in await messages(ws, 3)] == [6, 7, 8]
        await send_json(ws, {"type": "join", "room": "plain", "id": 2})
        assert await recv_json(ws) == {"type": "joined", "room": "plain", "id": 2}
        await send_json(ws, {"type": "join", "room": "h-b", "epoch": 5, "offset": 1})
        assert (await recv_json(ws))["code"] == "bad_request"
        await ws.close()


@pytest.mark.parametrize("case", ["trimmed", "over_limit", "other_epoch", "future", "expired"])
async def test_recovery_is_all_or_nothing(case: str) -> None:
    spec = History(size=5, ttl=0.3 if case == "expired" else 60)
    with history_server(history={"h-*": spec}, recovery_max_messages=6) as (server, manager):
        ws, hello = await welcome(server, "h-r")
        await broadcast(server, manager, "h-r", range(1, 3))
        await messages(ws, 2)
        await ws.close()
        missed = {"trimmed": 6, "over_limit": 7}.get(case, 3)
        await broadcast(server, manager, "h-r", range(3, 3 + missed))
        if case == "expired":
            await asyncio.sleep(0.5)
        epoch = "deadbeef" if case == "other_epoch" else hello["epoch"]
        offset = 99 if case == "future" else 2
        back, reply = await welcome(server, "h-r", f"?epoch={epoch}&offset={offset}")
        assert reply["recovered"] is False
        assert (reply["epoch"], reply["offset"]) == (hello["epoch"], 2 + missed)
        assert await silent(back)
        await on_server(server, manager.broadcast("h-r", "live"))
        live = await recv_json(back)
        assert (live["data"], live["offset"]) == ("live", 3 + missed)
        await back.close()


async def test_a_new_process_is_a_new_epoch() -> None:
    with history_server() as (server, manager):
        ws, hello = await welcome(server, "h-x")
        await broadcast(server, manager, "h-x", range(1, 3))
        await ws.close()
    with history_server() as (server, manager):
        back, reply = await welcome(server, "h-x", f"?epoch={hello['epoch']}&offset=2")
        assert reply["recovered"] is False and reply["epoch"] != hello["epoch"]
        assert reply["offset"] == 0
        assert await silent(back)
        await back.close()


async def test_published_ack_follows_the_echo() -> None:
    with history_server() as (server, _):
        ws, _ = await welcome(server, "h-p")
        await send_json(ws, {"type": "publish", "data": "a", "id": "x1"})
        await send_json(ws, {"type": "publish", "data": "b"})
        await send_json(ws, {"type": "publish", "data": "c", "id": "x3"})
        frames = [await recv_json(ws) for _ in range(5)]
        assert [(f["type"], f.get("offset")) for f in frames] == [
            ("message", 1), ("published", 1), ("message", 2), ("message", 3), ("published", 3)
        ]
        assert frames[1] == {"type": "published", "room": "h-p", "offset": 1, "id": "x1"}
        await send_json(ws, {"type": "join", "room": "plain"})
        await recv_json(ws)
        await send_json(ws, {"type": "publish", "room": "plain", "data": 1, "id": 7})
        assert (await recv_json(ws))["type"] == "message"
        assert await recv_json(ws) == {"type": "published", "room": "plain", "offset": None,
                                       "id": 7}
        await ws.close()


async def test_history_api() -> None:
    with history_server() as (server, manager):
        await broadcast(server, manager, "h-api", range(1, 31))
        page = await on_server(server, manager.history("h-api", limit=3))
        assert [m.offset for m in page.messages] == [28, 29, 30]
        assert page.position.offset == 30 and page.messages[0].data == 28
        after = await on_server(server, manager.history("h-api", since=25, limit=2))
        assert [m.data for m in after.messages] == [26, 27]
        oldest = await on_server(server, manager.history("h-api", since=0, limit=100))
        assert [m.offset for m in oldest.messages] == list(range(11, 31))  # size 20
        assert page.to_dict()["messages"][0] == {"offset": 28, "data": 28, "sender": None}
        with pytest.raises(ValueError, match="no history"):
            await on_server(server, manager.history("plain"))
        with pytest.raises(TypeError, match="JSON"):
            await on_server(server, manager.broadcast("h-api", b"raw"))


async def test_recovery_while_broadcasts_continue_has_no_gap_or_duplicate() -> None:
    options: dict[str, Any] = {"history": {"h-*": History(size=1000)},
                               "recovery_max_messages": 1000}
    with history_server(**options) as (server, manager):
        ws, hello = await welcome(server, "h-busy")
        await broadcast(server, manager, "h-busy", range(1, 3))
        await messages(ws, 2)
        await ws.close()
        await broadcast(server, manager, "h-busy", range(3, 203))

        async def storm() -> None:
            for value in range(203, 403):
                await manager.broadcast("h-busy", value)
                await asyncio.sleep(0)

        assert server.loop is not None
        task = asyncio.run_coroutine_threadsafe(storm(), server.loop)
        back, reply = await welcome(server, "h-busy", f"?epoch={hello['epoch']}&offset=2")
        assert reply["recovered"] is True
        got = [f["offset"] for f in await messages(back, 400)]
        assert got == list(range(3, 403))
        task.result(10)
        await back.close()


def test_settings_from_the_environment() -> None:
    env = {"WSPLUGIN_HISTORY": '{"orders-*": {"size": 7, "ttl": 30}}',
           "WSPLUGIN_RECOVERY_MAX_MESSAGES": "50"}
    settings = build_settings({}, env)
    assert settings.history == {"orders-*": History(size=7, ttl=30)}
    assert settings.recovery_max_messages == 50
    assert build_settings({"history": {"a": {"size": 3}}}, {}).history["a"].size == 3
    with pytest.raises(ValueError, match="WSPLUGIN_HISTORY"):
        build_settings({}, {"WSPLUGIN_HISTORY": "{nope"})
    with pytest.raises(ValueError, match="size"):
        build_settings({"history": {"a": {"size": 0}}}, {})


async def test_admin_api_shows_a_rooms_history() -> None:
    from tests.admin_helpers import ADMIN, VIEWER, create_app, manager_of

    app = create_app(history=HISTORY)
    manager = manager_of(app)
    with ThreadServer(app) as server:
        await broadcast(server, manager, "h-admin", range(1, 6))
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            url = f"{ADMIN}/api/rooms/h-admin/history"
            assert (await http.get(url)).status_code in (401, 403)
            response = await http.get(url, params={"limit": 2}, headers=VIEWER)
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["room"], body["offset"], len(body["epoch"])) == ("h-admin", 5, 8)
            assert body["messages"] == [{"offset": 4, "data": 4, "sender": None},
                                        {"offset": 5, "data": 5, "sender": None}]
            since = await http.get(url, params={"since": 1, "limit": 1}, headers=VIEWER)
            assert [m["offset"] for m in since.json()["messages"]] == [2]
            plain = await http.get(f"{ADMIN}/api/rooms/plain/history", headers=VIEWER)
            assert plain.status_code == 404


async def test_without_echo_the_publisher_gets_only_its_ack() -> None:
    with history_server(echo_to_sender=False) as (server, _):
        ws, _ = await welcome(server, "h-quiet")
        other, _ = await welcome(server, "h-quiet")
        await send_json(ws, {"type": "publish", "data": "hi", "id": 1})
        assert await recv_json(ws) == {"type": "published", "room": "h-quiet", "offset": 1,
                                       "id": 1}
        assert (await recv_json(other))["data"] == "hi"
        assert await silent(ws)
        for client in (ws, other):
            await client.close()
