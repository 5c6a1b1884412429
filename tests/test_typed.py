"""Typed messages and per-room limits, on a real uvicorn server with real clients.

An invalid publish gets ``invalid`` with pydantic's ``loc`` (no input values) and the
connection stays open; a typed handler gets a model instance and what it returns is what
members receive; a model broadcast arrives as its JSON; a mismatched ``broadcast`` raises at
the call; validation runs once per publish, never per recipient; a room's
``max_message_bytes`` and ``rate_limit`` answer with error frames.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from pydantic import BaseModel, Field, field_validator

from tests.ws_helpers import (
    close_code,
    errors_logged,
    on_server,
    open_client,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import Connection, RoomOptions

SECRET = "s3cret-input-value"


class ChatIn(BaseModel):
    text: str = Field(max_length=50)
    mood: int = 0

    @field_validator("text")
    @classmethod
    def count(cls, value: str) -> str:
        COUNTS["ChatIn"] += 1
        return value


class ChatOut(BaseModel):
    text: str
    user: str
    at: datetime.datetime

    @field_validator("text")
    @classmethod
    def count(cls, value: str) -> str:
        COUNTS["ChatOut"] += 1
        return value


COUNTS = {"ChatIn": 0, "ChatOut": 0}
AT = datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.UTC)


def typed_rooms(**extra: Any) -> dict[str, RoomOptions]:
    return {
        "chat-*": RoomOptions(client_publish=True, publish=ChatIn, **extra),
        "news-*": RoomOptions(message=ChatOut),
        "free-*": RoomOptions(client_publish=True),
    }


async def test_an_invalid_publish_gets_pydantic_errors_and_the_connection_stays_open() -> None:
    with serve(rooms=typed_rooms()) as (server, _):
        ws, _ = await open_client(server, "chat-1")
        await send_json(ws, {"type": "publish", "id": 7,
                             "data": {"text": SECRET * 10, "mood": "very " + SECRET}})
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid"
        assert error["id"] == 7
        assert error["detail"] == "2 validation errors for ChatIn"
        assert [e["loc"] for e in error["errors"]] == [["text"], ["mood"]]
        assert {e["type"] for e in error["errors"]} == {"string_too_long", "int_parsing"}
        assert all(set(e) == {"loc", "msg", "type"} for e in error["errors"])
        assert SECRET not in json.dumps(error)  # no input values in the frame
        await send_json(ws, {"type": "publish", "id": 8, "data": {"text": "hi"}})
        assert (await recv_type(ws, "message"))["data"] == {"text": "hi", "mood": 0}
        assert (await recv_type(ws, "published"))["id"] == 8
        await send_json(ws, {"type": "publish", "data": [1, 2]})  # not an object
        error = await recv_json(ws)
        assert error["code"] == "invalid" and error["errors"][0]["loc"] == []
        assert "id" not in error
        await ws.close()


async def test_a_typed_handler_gets_a_model_and_members_receive_its_return_value() -> None:
    seen: list[Any] = []
    with serve(rooms=typed_rooms(message=ChatOut)) as (server, manager):

        @manager.on_publish("chat-*")
        async def chat(conn: Connection, room: str, msg: ChatIn) -> ChatOut | None:
            seen.append(msg)
            if msg.text == "drop":
                return None
            if msg.text == "bad":
                raise ValueError("no bad words")
            if msg.text == "broken":  # a model the handler builds does not validate
                ChatOut.model_validate({"text": SECRET})
            return ChatOut(text=msg.text.upper(), user=conn.id[:4], at=AT)

        sender, sender_id = await open_client(server, "chat-1")
        member, _ = await open_client(server, "chat-1")
        await send_json(sender, {"type": "publish", "data": {"text": "hello"}, "id": 1})
        frame = await recv_type(member, "message")
        assert frame["data"] == {"text": "HELLO", "user": sender_id[:4],
                                 "at": "2026-12-06T09:30:00Z"}
        assert frame["sender"] == sender_id
        assert isinstance(seen[0], ChatIn) and seen[0].text == "hello"

        await send_json(sender, {"type": "publish", "data": {"text": "drop"}, "id": 2})
        dropped = await recv_type(sender, "published")
        while dropped["id"] != 2:
            dropped = await recv_type(sender, "published")
        assert dropped == {"type": "published", "id": 2, "room": "chat-1", "offset": None,
                           "dropped": True}
        await send_json(sender, {"type": "publish", "data": {"text": "bad"}, "id": 3})
        rejected = await recv_type(sender, "error")
        assert (rejected["code"], rejected["detail"], rejected["id"]) == (
            "rejected", "no bad words", 3)
        await send_json(sender, {"type": "publish", "data": {"text": "broken"}, "id": 4})
        broken = await recv_type(sender, "error")
        assert (broken["code"], broken["id"]) == ("rejected", 4)
        assert broken["detail"] == "2 validation errors for ChatOut"  # no input value
        await send_json(member, {"type": "ping", "id": 9})  # the member got nothing else
        assert await recv_json(member) == {"type": "pong", "id": 9}
        await sender.close()
        await member.close()


async def test_the_handler_replaces_on_message_only_in_its_rooms() -> None:
    def shout(conn: Connection, room: str, data: Any) -> Any:
        return {"hooked": data}

    with serve(on_message=shout, rooms=typed_rooms()) as (server, manager):

        @manager.on_publish("chat-*")
        def chat(conn: Connection, room: str, msg: ChatIn) -> dict[str, str]:
            return {"handled": msg.text}

        chat_ws, _ = await open_client(server, "chat-1")
        other, _ = await open_client(server, "lobby")
        await send_json(chat_ws, {"type": "publish", "data": {"text": "a"}})
        assert (await recv_type(chat_ws, "message"))["data"] == {"handled": "a"}
        await send_json(other, {"type": "publish", "data": "b"})
        assert (await recv_type(other, "message"))["data"] == {"hooked": "b"}
        await chat_ws.close()
        await other.close()


async def test_a_model_broadcast_arrives_as_its_json() -> None:
    with serve(rooms=typed_rooms()) as (server, manager):
        ws, _ = await open_client(server, "news-1")
        plain, _ = await open_client(server, "lobby")
        out = ChatOut(text="extra", user="ann", at=AT)
        assert await on_server(server, manager.broadcast("news-1", out)) == 1
        assert (await recv_type(ws, "message"))["data"] == {
            "text": "extra", "user": "ann", "at": "2026-12-06T09:30:00Z"}
        # a plain room takes a model too (JSON mode), and plain data that fits the model
        await on_server(server, manager.broadcast("lobby", out))
        assert (await recv_type(plain, "message"))["data"]["at"] == "2026-12-06T09:30:00Z"
        await on_server(server, manager.broadcast(
            "news-1", {"text": "t", "user": "u", "at": "2026-12-06T09:30:00+00:00"}))
        assert (await recv_type(ws, "message"))["data"]["at"] == "2026-12-06T09:30:00Z"
        await ws.close()
        await plain.close()


async def test_a_mismatched_broadcast_raises_at_the_call_and_sends_nothing() -> None:
    with serve(rooms=typed_rooms()) as (server, manager):
        ws, _ = await open_client(server, "news-1")
        with pytest.raises(ValueError, match=r"validation errors? for ChatOut"):
            await on_server(server, manager.broadcast("news-1", {"text": "no user"}))
        with pytest.raises(ValueError):
            await on_server(server, manager.broadcast("news-1", ChatIn(text="other model")))
        with pytest.raises(ValueError):
            await on_server(server, manager.broadcast("news-1", b"bytes"))
        await send_json(ws, {"type": "ping", "id": 1})
        assert await recv_json(ws) == {"type": "pong", "id": 1}  # no message came first
        assert manager.counters.publish_errors == 0
        await ws.close()


async def test_a_client_publish_that_misfits_the_message_model_is_invalid() -> None:
    rooms = {"news-*": RoomOptions(client_publish=True, message=ChatOut)}
    with serve(rooms=rooms) as (server, _):
        ws, _ = await open_client(server, "news-1")
        await send_json(ws, {"type": "publish", "data": {"text": "t"}, "id": 4})
        error = await recv_json(ws)
        assert (error["code"], error["id"]) == ("invalid", 4)
        assert sorted(e["loc"] for e in error["errors"]) == [["at"], ["user"]]
        await ws.close()


async def test_validation_runs_once_per_publish_never_per_recipient() -> None:
    with serve(rooms=typed_rooms(message=ChatOut)) as (server, manager):

        @manager.on_publish("chat-*")
        async def chat(conn: Connection, room: str, msg: ChatIn) -> dict[str, Any]:
            return {"text": msg.text, "user": "u", "at": "2026-12-06T09:30:00Z"}

        clients = [await open_client(server, "chat-1") for _ in range(20)]
        before = dict(COUNTS)
        sender = clients[0][0]
        for n in range(5):
            await send_json(sender, {"type": "publish", "data": {"text": f"m{n}"}})
        for ws, _ in clients:
            for _ in range(5):
                await recv_type(ws, "message")
        assert COUNTS["ChatIn"] - before["ChatIn"] == 5  # 20 recipients, 5 publishes
        assert COUNTS["ChatOut"] - before["ChatOut"] == 5
        before = dict(COUNTS)
        await on_server(server, manager.broadcast(
            "chat-1", ChatOut(text="x", user="u", at=AT)))  # an instance: not validated again
        await on_server(server, manager.broadcast(
            "chat-1", {"text": "y", "user": "u", "at": "2026-12-06T09:30:00Z"}))
        assert COUNTS["ChatOut"] - before["ChatOut"] == 2  # the constructor, then the dict
        for ws, _ in clients:
            await ws.close()


# ----------------------------------------------------------------------- per-room limits
async def test_a_room_max_message_bytes_answers_too_big_and_the_frame_limit_still_closes(
) -> None:
    rooms = {"small-*": RoomOptions(client_publish=True, max_message_bytes=100)}
    with serve(rooms=rooms, client_publish=True, max_message_bytes=2000) as (server, _):
        ws, _ = await open_client(server, "small-1")
        await send_json(ws, {"type": "publish", "data": "x" * 98, "id": 1})  # 100 bytes: ok
        assert (await recv_type(ws, "message"))["data"] == "x" * 98
        await send_json(ws, {"type": "publish", "data": "é" * 50, "id": 2})  # 102 bytes
        error = await recv_type(ws, "error")
        assert (error["code"], error["id"]) == ("too_big", 2)
        await send_json(ws, {"type": "join", "room": "big"})
        await recv_type(ws, "joined")
        await send_json(ws, {"type": "publish", "room": "big", "data": "y" * 500})
        assert (await recv_type(ws, "message"))["room"] == "big"  # other rooms: the global
        await send_json(ws, {"type": "publish", "data": "z" * 3000})  # over the frame limit
        assert await close_code(ws) == 1009


async def test_a_room_rate_limit_answers_rate_limited_without_closing() -> None:
    rooms = {"slow-*": RoomOptions(client_publish=True, rate_limit=(3, 0.001))}
    with serve(rooms=rooms, client_publish=True, echo_to_sender=False) as (server, manager):
        ws, _ = await open_client(server, "slow-1")
        await send_json(ws, {"type": "join", "room": "fast"})
        await recv_type(ws, "joined")
        for n in range(5):
            await send_json(ws, {"type": "publish", "data": n, "id": n})
        replies = [await recv_json(ws) for _ in range(5)]
        codes = [r.get("code", r["type"]) for r in replies]
        assert codes == ["published"] * 3 + ["rate_limited"] * 2, replies
        for n in range(5):  # another room is not limited, nor is the connection closed
            await send_json(ws, {"type": "publish", "room": "fast", "data": n, "id": n})
        assert [(await recv_json(ws))["type"] for _ in range(5)] == ["published"] * 5
        other, _ = await open_client(server, "slow-1")  # its own bucket
        await send_json(other, {"type": "publish", "data": "x", "id": 1})
        assert (await recv_json(other))["type"] == "published"
        assert len(manager.room_rates) == 2
        await send_json(ws, {"type": "leave", "room": "slow-1"})
        await recv_type(ws, "left")
        await wait_until(lambda: _async(len(manager.room_rates) == 1), what="bucket forgotten")
        await other.close()
        await wait_until(lambda: _async(len(manager.room_rates) == 0), what="buckets freed")
        await ws.close()


async def _async(value: bool) -> bool:
    return value


async def test_a_pattern_authorize_applies_to_the_url_room_and_joins(caplog: Any) -> None:
    def staff_only(identity: Any, room: str) -> bool:
        return bool(identity == "staff")

    def authenticate(websocket: Any) -> str:
        return str(websocket.query_params.get("who", "guest"))

    rooms = {"staff-*": RoomOptions(authorize=staff_only)}
    with errors_logged(caplog) as errors, \
            serve(authenticate=authenticate, rooms=rooms) as (server, _):
        guest, _ = await open_client(server, "lobby")
        await send_json(guest, {"type": "join", "room": "staff-1", "id": 1})
        assert (await recv_json(guest))["code"] == "forbidden"
        staff, _ = await open_client(server, "staff-1?who=staff")
        with pytest.raises(Exception, match="403"):
            await open_client(server, "staff-2?who=guest")
        await guest.close()
        await staff.close()
    assert errors == []


async def test_bad_typed_input_never_closes_or_logs_errors(caplog: Any) -> None:
    frames = [{"type": "publish", "data": None}, {"type": "publish", "data": {"text": 5}},
              {"type": "publish", "data": {"text": "x" * 10_000}},
              {"type": "publish", "data": {"text": "ok", "mood": 1e308}},
              {"type": "publish", "data": [[[[[]]]]]}]
    with errors_logged(caplog) as errors, serve(rooms=typed_rooms()) as (server, _):
        ws, _ = await open_client(server, "chat-1")
        for frame in frames:
            await send_json(ws, frame)
            reply = await recv_json(ws)
            assert reply["type"] in ("error", "message"), reply
        await send_json(ws, {"type": "ping"})
        assert await recv_type(ws, "pong")
        await ws.close()
        await asyncio.sleep(0)
    assert errors == []
