"""The managed endpoint {prefix}/{room}: handshake, wire protocol, bad input, hook failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.ws_helpers import (
    close_code,
    errors_logged,
    make_app,
    on_server,
    open_client,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import Connection


def authorize(identity: Any, room: str) -> bool:
    return not room.startswith("secret")


def on_message(conn: Connection, room: str, data: Any) -> Any:
    if data == "forbidden word":
        raise ValueError("no forbidden words here")
    if data == "crash":
        raise RuntimeError("the hook is broken")
    return data


@pytest.fixture
def client() -> Iterator[TestClient]:
    app, _ = make_app(authorize=authorize, on_message=on_message, max_rooms_per_connection=2,
                      max_message_bytes=1024)
    with TestClient(app) as test_client:
        yield test_client


# ---------------------------------------------------------------- the protocol (in-process)
def test_welcome_is_the_first_frame(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome"
        assert welcome["rooms"] == ["lobby"]
        assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]


def test_publish_reaches_the_sender_with_its_id(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        me = ws.receive_json()["connection_id"]
        ws.send_json({"type": "publish", "data": {"text": "hi", "n": [1, 2]}})
        assert ws.receive_json() == {"type": "message", "room": "lobby",
                                     "data": {"text": "hi", "n": [1, 2]}, "sender": me}


def test_ping_pong_echoes_the_id(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        ws.send_json({"type": "ping", "id": "abc"})
        assert ws.receive_json() == {"type": "pong", "id": "abc"}
        ws.send_json({"type": "ping", "id": 42})
        assert ws.receive_json() == {"type": "pong", "id": 42}


def test_join_publish_leave_with_ids(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        me = ws.receive_json()["connection_id"]
        ws.send_json({"type": "join", "room": "other", "id": 1})
        assert ws.receive_json() == {"type": "joined", "room": "other", "id": 1}
        ws.send_json({"type": "publish", "room": "other", "data": "x"})
        assert ws.receive_json() == {"type": "message", "room": "other", "data": "x",
                                     "sender": me}
        ws.send_json({"type": "leave", "room": "other", "id": 2})
        assert ws.receive_json() == {"type": "left", "room": "other", "id": 2}
        ws.send_json({"type": "publish", "room": "other", "data": "x", "id": 3})
        error = ws.receive_json()
        assert (error["type"], error["code"], error["id"]) == ("error", "not_joined", 3)


def test_joining_twice_is_idempotent(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "join", "room": "lobby"})
        assert ws.receive_json() == {"type": "joined", "room": "lobby"}


def test_leaving_the_endpoint_room_stops_its_messages(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "leave", "room": "lobby"})
        assert ws.receive_json() == {"type": "left", "room": "lobby"}
        ws.send_json({"type": "publish", "data": "x"})
        assert ws.receive_json()["code"] == "not_joined"


BAD_FRAMES = [
    pytest.param("{not json", "bad_json", id="bad_json"),
    pytest.param('{"type": "shout", "id": 9}', "unknown_type", id="unknown_type"),
    pytest.param('{"type": "publish", "id": 9}', "bad_request", id="publish_without_data"),
    pytest.param('{"type": "join", "id": 9}', "bad_request", id="join_without_room"),
    pytest.param('{"type": "leave", "id": 9}', "bad_request", id="leave_without_room"),
    pytest.param('{"type": "join", "room": 5, "id": 9}', "bad_request", id="room_not_a_string"),
    pytest.param('{"id": 9}', "bad_request", id="no_type"),
    pytest.param('{"type": null, "id": 9}', "bad_request", id="type_not_a_string"),
    pytest.param("[1, 2, 3]", "bad_request", id="not_an_object"),
    pytest.param('"ping"', "bad_request", id="json_string"),
    pytest.param('{"type": "publish", "room": "elsewhere", "data": 1, "id": 9}', "not_joined",
                 id="not_joined"),
    pytest.param('{"type": "leave", "room": "elsewhere", "id": 9}', "not_joined",
                 id="leave_not_joined"),
    pytest.param('{"type": "join", "room": "secret-1", "id": 9}', "forbidden", id="forbidden"),
    pytest.param('{"type": "join", "room": "bad room", "id": 9}', "bad_room", id="bad_room"),
    pytest.param('{"type": "join", "room": "", "id": 9}', "bad_room", id="empty_room"),
    pytest.param('{"type": "publish", "room": "%s", "data": 1, "id": 9}' % ("x" * 129),
                 "bad_room", id="long_room"),
    pytest.param('{"type": "publish", "data": "forbidden word", "id": 9}', "rejected",
                 id="rejected"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
def test_bad_input_gets_an_error_frame_and_the_connection_keeps_working(
    client: TestClient, frame: str, code: str
) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_text(frame)
        error = ws.receive_json()
        assert error["type"] == "error"
        assert error["code"] == code
        assert isinstance(error["detail"], str) and error["detail"]
        command = json.loads(frame) if code != "bad_json" else None
        if isinstance(command, dict) and isinstance(command.get("type"), str):
            assert error["id"] == 9
        ws.send_json({"type": "ping", "id": "after"})
        assert ws.receive_json() == {"type": "pong", "id": "after"}


def test_rejected_detail_is_the_hook_message(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "forbidden word"})
        assert ws.receive_json()["detail"] == "no forbidden words here"


def test_binary_frame_is_a_bad_request(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_bytes(b'{"type": "ping"}')
        error = ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "bad_request")
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_too_many_rooms(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "join", "room": "second"})
        assert ws.receive_json() == {"type": "joined", "room": "second"}
        ws.send_json({"type": "join", "room": "third", "id": "t"})
        error = ws.receive_json()
        assert (error["code"], error["id"]) == ("too_many_rooms", "t")
        ws.send_json({"type": "leave", "room": "second"})
        assert ws.receive_json() == {"type": "left", "room": "second"}
        ws.send_json({"type": "join", "room": "third"})
        assert ws.receive_json() == {"type": "joined", "room": "third"}


def test_oversize_frame_closes_with_1009(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "ok" * 100})
        assert ws.receive_json()["type"] == "message"
        ws.send_json({"type": "publish", "data": "x" * 2000})
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 1009


def test_oversize_is_measured_in_utf8_bytes(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "☃" * 400})  # 400 chars, 1,200 bytes
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 1009


def test_rate_abuse_closes_with_4029() -> None:
    app, _ = make_app(rate_limit=(5, 1.0))
    with TestClient(app) as client, client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        for n in range(20):
            ws.send_json({"type": "ping", "id": n})
        pongs = []
        with pytest.raises(WebSocketDisconnect) as info:
            while True:
                pongs.append(ws.receive_json()["id"])
        assert info.value.code == 4029
        assert pongs == [0, 1, 2, 3, 4]


def test_rate_limit_none_allows_bursts() -> None:
    app, _ = make_app(rate_limit=None)
    with TestClient(app) as client, client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        for n in range(300):
            ws.send_json({"type": "ping", "id": n})
        assert [ws.receive_json()["id"] for _ in range(300)] == list(range(300))


def test_echo_to_sender_false_in_process() -> None:
    app, _ = make_app(echo_to_sender=False, client_publish=True)
    with TestClient(app) as client, client.websocket_connect("/ws/lobby") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "not for me"})
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_on_message_can_transform_data() -> None:
    async def shout(conn: Connection, room: str, data: Any) -> Any:
        await asyncio.sleep(0)
        return {"room": room, "text": str(data).upper(), "by": conn.id}

    app, _ = make_app(on_message=shout)
    with TestClient(app) as client, client.websocket_connect("/ws/lobby") as ws:
        me = ws.receive_json()["connection_id"]
        ws.send_json({"type": "publish", "data": "hi"})
        assert ws.receive_json()["data"] == {"room": "lobby", "text": "HI", "by": me}


# ---------------------------------------------------------------- handshake (real server)
def identity_from_query(websocket: WebSocket) -> str | None:
    return websocket.query_params.get("user")


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, **kwargs)
    return info.value.response.status_code


async def test_authenticate_returning_none_is_403() -> None:
    with serve(authenticate=identity_from_query) as (server, manager):
        assert await refused_status(f"{server.ws_url}/ws/lobby") == 403
        ws, _ = await open_client(server, "lobby?user=ann")
        infos = await on_server(server, manager.connections())
        assert [i.identity for i in infos] == ["ann"]
        await ws.close()


async def test_authenticate_raising_is_403() -> None:
    def broken(websocket: WebSocket) -> str:
        raise PermissionError("token expired")

    with serve(authenticate=broken) as (server, manager):
        assert await refused_status(f"{server.ws_url}/ws/lobby") == 403
        assert await on_server(server, manager.connections()) == []


async def test_async_hooks_work() -> None:
    async def authenticate(websocket: WebSocket) -> str | None:
        await asyncio.sleep(0.001)
        return websocket.query_params.get("user")

    async def authorize_async(identity: Any, room: str) -> bool:
        await asyncio.sleep(0.001)
        return bool(room.startswith(f"{identity}-") or room == "lobby")

    with serve(authenticate=authenticate, authorize=authorize_async) as (server, _):
        assert await refused_status(f"{server.ws_url}/ws/bob-private?user=ann") == 403
        ws, _ = await open_client(server, "ann-private?user=ann")
        await send_json(ws, {"type": "join", "room": "bob-private", "id": 1})
        assert (await recv_json(ws))["code"] == "forbidden"
        await send_json(ws, {"type": "join", "room": "lobby", "id": 2})
        assert await recv_json(ws) == {"type": "joined", "room": "lobby", "id": 2}
        await ws.close()


async def test_authorize_refusing_the_url_room_is_403() -> None:
    with serve(authorize=authorize) as (server, _):
        assert await refused_status(f"{server.ws_url}/ws/secret-room") == 403
        ws, _ = await open_client(server, "public")
        await ws.close()


@pytest.mark.parametrize("room", ["bad!room", "x" * 129, "a%20b", "%C3%A9"])
async def test_invalid_room_in_url_is_403(room: str) -> None:
    with serve() as (server, manager):
        assert await refused_status(f"{server.ws_url}/ws/{room}") == 403
        assert await on_server(server, manager.rooms()) == {}


# ------------------------------------------------------- bad input beside a healthy client
async def abuse(server_url: str) -> dict[str, Any]:
    """Every bad input on one connection; returns the error codes and the final close code."""
    ws = await connect(f"{server_url}/ws/lobby")
    await recv_json(ws)
    codes = []
    for frame in [f for p in BAD_FRAMES for f in p.values[:1]]:
        await ws.send(str(frame))
        codes.append((await recv_type(ws, "error"))["code"])
    await ws.send(b"\x00\x01binary")
    codes.append((await recv_type(ws, "error"))["code"])
    await ws.send(json.dumps({"type": "publish", "data": "x" * 5000}))
    oversize = await close_code(ws)
    ws = await connect(f"{server_url}/ws/lobby")
    await recv_json(ws)
    for n in range(50):
        await send_json(ws, {"type": "ping", "id": n})
    flood = await close_code(ws)
    return {"codes": codes, "oversize": oversize, "flood": flood}


async def test_bad_input_does_not_disturb_a_well_behaved_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options: dict[str, Any] = {
        "authorize": authorize, "on_message": on_message, "max_rooms_per_connection": 2,
        "max_message_bytes": 1024, "rate_limit": (30, 5.0),
    }
    with serve(**options) as (server, manager), errors_logged(caplog) as errors:
        good, good_id = await open_client(server, "lobby")
        received: list[Any] = []

        async def listen() -> None:
            while len(received) < 40:
                frame = await recv_json(good)
                if frame["type"] == "message" and frame["sender"] is None:
                    received.append(frame["data"])

        listener = asyncio.create_task(listen())
        abuser = asyncio.create_task(abuse(server.ws_url))
        for n in range(40):
            await on_server(server, manager.broadcast("lobby", n))
            await asyncio.sleep(0.005)
        result = await asyncio.wait_for(abuser, 20)
        await asyncio.wait_for(listener, 10)
        await send_json(good, {"type": "ping", "id": "still"})
        assert await recv_type(good, "pong") == {"type": "pong", "id": "still"}
        await good.close()

    expected = [str(p.values[1]) for p in BAD_FRAMES] + ["bad_request"]
    assert result["codes"] == expected
    assert result["oversize"] == 1009
    assert result["flood"] == 4029
    assert received == list(range(40))
    assert good_id
    assert manager.local_connections() == []
    assert errors == []


# ---------------------------------------------------------------- a failing user hook
async def test_hook_exception_closes_1011_logs_once_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(on_message=on_message) as (server, manager):
        other, _ = await open_client(server, "lobby")
        victim, victim_id = await open_client(server, "lobby")
        with errors_logged(caplog) as errors:
            await send_json(victim, {"type": "publish", "data": "crash"})
            assert await close_code(victim) == 1011
            await send_json(other, {"type": "publish", "data": "still here"})
            frame = await recv_type(other, "message")
            assert frame["data"] == "still here"
            infos = await on_server(server, manager.connections())
            assert victim_id not in [i.id for i in infos]
            third, _ = await open_client(server, "lobby")
            await send_json(third, {"type": "ping"})
            assert await recv_type(third, "pong") == {"type": "pong"}
            await third.close()
            await other.close()
        hook_errors = [r for r in errors if r.name == "wsplugin"]
        assert len(hook_errors) == 1, [r.getMessage() for r in errors]
        assert "the hook is broken" in hook_errors[0].getMessage()
        assert victim_id in hook_errors[0].getMessage()
        assert [r for r in errors if r.name != "wsplugin"] == []


async def test_client_close_codes_are_seen_by_the_server() -> None:
    """A client that closes normally is removed from its room at once."""
    with serve() as (server, manager):
        ws, conn_id = await open_client(server, "lobby")
        assert await on_server(server, manager.rooms()) == {"lobby": 1}
        await ws.close()

        async def room_empty() -> bool:
            return bool(await on_server(server, manager.rooms()) == {})

        await wait_until(room_empty, 5, "the room to empty")
        assert conn_id not in [i.id for i in await on_server(server, manager.connections())]



# ------------------------------------------------------------------- strict JSON (real server)
NOT_STRICT_JSON = [
    '{"type": "publish", "data": NaN, "id": 1}',
    '{"type": "publish", "data": Infinity}',
    '{"type": "publish", "data": -Infinity}',
    '{"type": "ping", "id": 1e999}',
    '{"type": "ping", "id": "\\ud800"}',
    "[" * 100_000,
    '{"type": "publish", "data": ' + "[" * 64 + "]" * 64 + "}",
]


async def test_non_strict_json_gets_bad_json_and_the_connection_stays_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(client_publish=True, max_message_bytes=200_000) as (server, manager), \
            errors_logged(caplog) as errors:
        ws, _ = await open_client(server, "lobby")
        other, _ = await open_client(server, "lobby")
        for frame in NOT_STRICT_JSON:
            await ws.send(frame)
            error = await recv_json(ws)
            assert (error["type"], error["code"]) == ("error", "bad_json"), frame[:40]
            assert error["detail"]
        await send_json(ws, {"type": "ping", "id": "still open"})
        assert await recv_json(ws) == {"type": "pong", "id": "still open"}
        await send_json(ws, {"type": "publish", "data": "fine"})
        assert (await recv_type(other, "message"))["data"] == "fine"
        assert len(await on_server(server, manager.connections())) == 2
        await ws.close()
        await other.close()
    assert errors == []


async def test_hook_returning_what_cannot_be_sent_is_an_error_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def to_nan(conn: Connection, room: str, data: Any) -> Any:
        return float("nan") if data == "nan" else {1, 2} if data == "set" else data

    with serve(on_message=to_nan) as (server, _), errors_logged(caplog) as errors:
        ws, _ = await open_client(server, "lobby")
        for data in ("nan", "set"):
            await send_json(ws, {"type": "publish", "data": data, "id": data})
            error = await recv_json(ws)
            assert (error["code"], error["id"]) == ("bad_request", data)
            assert "JSON" in error["detail"]
        await send_json(ws, {"type": "publish", "data": "ok"})
        assert (await recv_type(ws, "message"))["data"] == "ok"
        await ws.close()
    assert errors == []


# -------------------------------------------------------------------- client_publish
async def test_client_publish_is_refused_by_default_and_nothing_is_delivered() -> None:
    with serve() as (server, manager):
        mallory, _ = await open_client(server, "order-42")
        owner, _ = await open_client(server, "order-42")
        await send_json(mallory, {"type": "publish", "data": {"status": "refunded"}, "id": 1})
        error = await recv_json(mallory)
        assert (error["type"], error["code"], error["id"]) == ("error", "forbidden", 1)
        assert "client_publish" in error["detail"] and "on_message" in error["detail"]
        await send_json(mallory, {"type": "ping"})
        assert await recv_json(mallory) == {"type": "pong"}
        await on_server(server, manager.broadcast("order-42", "from the server"))
        frame = await recv_json(owner)  # the first frame after the welcome
        assert (frame["data"], frame["sender"]) == ("from the server", None)
        assert manager.room_stats()["order-42"]["messages"] == 1  # the server's only
        await mallory.close()
        await owner.close()


def publish_result(app_options: dict[str, Any], room: str) -> dict[str, Any]:
    """Join ``room`` (in-process) and publish to it; the frame that comes back."""
    app, _ = make_app(**app_options)
    with TestClient(app) as client, client.websocket_connect(f"/ws/{room}") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "hello"})
        frame: dict[str, Any] = ws.receive_json()
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        return frame


def test_client_publish_true_lets_every_member_publish() -> None:
    frame = publish_result({"client_publish": True}, "order-42")
    assert (frame["type"], frame["data"]) == ("message", "hello")


@pytest.mark.parametrize(
    ("room", "allowed"),
    [("chat-1", True), ("chat-", True), ("lobby", True), ("lobby2", False),
     ("order-42", False), ("xchat-1", False)],
)
def test_client_publish_patterns_allow_matching_rooms_only(room: str, allowed: bool) -> None:
    frame = publish_result({"client_publish": ["chat-*", "lobby"]}, room)
    assert frame["type"] == ("message" if allowed else "error")
    if not allowed:
        assert frame["code"] == "forbidden"


@pytest.mark.parametrize(("raw", "allowed"), [("chat-*,lobby", True), ("true", True),
                                              ("false", False), ("order-*", False)])
def test_client_publish_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, allowed: bool
) -> None:
    monkeypatch.setenv("WSPLUGIN_CLIENT_PUBLISH", raw)
    frame = publish_result({}, "lobby")
    assert frame["type"] == ("message" if allowed else "error")


def test_an_on_message_hook_decides_when_client_publish_is_off() -> None:
    frame = publish_result({"on_message": on_message}, "order-42")
    assert (frame["type"], frame["data"]) == ("message", "hello")
    app, _ = make_app(on_message=on_message)
    with TestClient(app) as client, client.websocket_connect("/ws/order-42") as ws:
        ws.receive_json()
        ws.send_json({"type": "publish", "data": "forbidden word"})
        assert ws.receive_json()["code"] == "rejected"


def test_patterns_still_apply_with_an_on_message_hook() -> None:
    frame = publish_result({"on_message": on_message, "client_publish": ["chat-*"]}, "order-42")
    assert frame["code"] == "forbidden"
