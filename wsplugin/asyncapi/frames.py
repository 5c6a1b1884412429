"""Every frame of the managed endpoint as data: direction, JSON Schema, an example, replies.

This is docs/protocol.md (and the history, presence and auth frames) in the form the AsyncAPI
document needs. The ``data`` of ``publish`` and ``message`` is filled per room pattern from
the room's models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from wsplugin.protocol import ROOM_PATTERN

Direction = Literal["client", "server"]

ROOM: dict[str, Any] = {"type": "string", "pattern": f"^{ROOM_PATTERN.pattern}$",
                        "description": "A room name: 1 to 128 of A-Z a-z 0-9 _ . : -"}
ID: dict[str, Any] = {"description": "Any JSON value; echoed on the reply"}
OFFSET: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}
EPOCH: dict[str, Any] = {"type": "string", "description": "The history stream's epoch"}
COUNTS: dict[str, Any] = {
    "type": "object", "required": ["users", "connections"],
    "properties": {"users": {"type": "integer"}, "connections": {"type": "integer"}}}
ERROR_CODES = ("bad_json", "unknown_type", "bad_request", "not_joined", "forbidden",
               "bad_room", "too_many_rooms", "rejected", "invalid", "too_big", "rate_limited",
               "publish_failed", "no_presence")
ANY_DATA: dict[str, Any] = {"description": "Any JSON value"}


@dataclass(frozen=True)
class Frame:
    """One frame type: who sends it, its fields (besides ``type``), an example."""

    type: str
    direction: Direction
    summary: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    example: dict[str, Any]
    replies: tuple[str, ...] = ()
    """Server frames answering this client frame (``error`` is always possible)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique among frames: ``client.presence`` and ``server.presence`` differ."""
        return f"{self.direction}.{self.type}"

    def schema(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The frame's JSON Schema; ``data``: the schema of its ``data`` field, if it has one."""
        properties = {"type": {"type": "string", "const": self.type}, **self.properties}
        if data is not None and "data" in properties:
            properties["data"] = data
        return {"type": "object", "required": ["type", *self.required],
                "properties": properties}


def _client(kind: str, summary: str, properties: dict[str, Any], required: tuple[str, ...],
            example: dict[str, Any], replies: tuple[str, ...] = ()) -> Frame:
    return Frame(kind, "client", summary, properties, required, {"type": kind, **example},
                 replies)


def _server(kind: str, summary: str, properties: dict[str, Any], required: tuple[str, ...],
            example: dict[str, Any]) -> Frame:
    return Frame(kind, "server", summary, properties, required, {"type": kind, **example})


POSITION = {"epoch": EPOCH, "offset": OFFSET}
RECOVERED = {"recovered": {"type": "boolean",
                           "description": "History rooms, when a position was asked"}}

FRAMES: tuple[Frame, ...] = (
    _client("connect", "Authenticate the connection with a token (a JWT)",
            {"token": {"type": "string"}}, ("token",), {"token": "<jwt>"}, ("welcome",)),
    _client("publish", "Publish data to a room the connection is in (the URL room by default)",
            {"room": ROOM, "data": ANY_DATA, "id": ID}, ("data",),
            {"room": "lobby", "data": {"text": "hi"}, "id": 1}, ("published",)),
    _client("join", "Join a room; with epoch and offset, recover what was missed",
            {"room": ROOM, "id": ID, **POSITION}, ("room",), {"room": "news", "id": 2},
            ("joined",)),
    _client("leave", "Leave a room", {"room": ROOM, "id": ID}, ("room",),
            {"room": "news", "id": 3}, ("left",)),
    _client("ping", "Ask for a pong", {"id": ID}, (), {"id": 4}, ("pong",)),
    _client("presence", "Ask who is online in a presence room (members only)",
            {"room": ROOM, "id": ID}, (), {"room": "chat-1", "id": 5}, ("presence",)),
    _client("presence_stats", "Ask how many users and connections a presence room has",
            {"room": ROOM, "id": ID}, (), {"room": "chat-1", "id": 6}, ("presence_stats",)),
    _client("refresh", "Replace the connection's token before it expires",
            {"token": {"type": "string"}, "id": ID}, ("token",), {"token": "<jwt>", "id": 7},
            ("refreshed",)),
    _server("welcome", "The first frame: the connection's id and its room",
            {"connection_id": {"type": "string"}, "rooms": {"type": "array", "items": ROOM},
             **POSITION, **RECOVERED}, ("connection_id", "rooms"),
            {"connection_id": "3f2a9c", "rooms": ["lobby"]}),
    _server("message", "A message published to a room the connection is in",
            {"room": {"anyOf": [ROOM, {"type": "null"}]}, "data": ANY_DATA,
             "sender": {"type": ["string", "null"],
                        "description": "The publishing connection, null from the server"},
             "user": {"type": "string", "description": "The publisher's user id, if any"},
             "offset": {**OFFSET, "description": "History rooms: the message's offset"}},
            ("room", "data", "sender"),
            {"room": "lobby", "data": {"text": "hi"}, "sender": "3f2a9c"}),
    _server("joined", "A join succeeded (or the server joined the connection)",
            {"room": ROOM, "id": ID, **POSITION, **RECOVERED}, ("room",),
            {"room": "news", "id": 2}),
    _server("left", "A leave succeeded (or the server removed the connection)",
            {"room": ROOM, "id": ID}, ("room",), {"room": "news", "id": 3}),
    _server("published", "A publish with an id was accepted (dropped: a handler dropped it)",
            {"room": ROOM, "id": ID, "offset": {"anyOf": [OFFSET, {"type": "null"}]},
             "dropped": {"type": "boolean"}}, ("room", "id", "offset"),
            {"room": "lobby", "id": 1, "offset": None}),
    _server("presence", "Who is online in a presence room",
            {"room": ROOM, "id": ID, "count": COUNTS, "truncated": {"type": "boolean"},
             "users": {"type": "object", "additionalProperties": {
                 "type": "object", "properties": {"connections": {"type": "integer"},
                                                  "info": {}}}}},
            ("room", "count"),
            {"room": "chat-1", "users": {"ann": {"connections": 1, "info": {"name": "Ann"}}},
             "count": {"users": 1, "connections": 1}}),
    _server("presence_stats", "How many users and connections a presence room has",
            {"room": ROOM, "id": ID, "users": {"type": "integer"},
             "connections": {"type": "integer"}}, ("room", "users", "connections"),
            {"room": "chat-1", "users": 1, "connections": 2, "id": 6}),
    _server("presence_diff", "Who joined and left a presence room (batched)",
            {"room": ROOM, "joins": {"type": "object"}, "leaves": {"type": "object"}},
            ("room", "joins", "leaves"),
            {"room": "chat-1", "joins": {"bob": {"info": {"name": "Bob"}}}, "leaves": {}}),
    _server("reset", "History lost messages this client needs: reload, then continue",
            {"room": ROOM, **POSITION}, ("room", "epoch", "offset"),
            {"room": "orders-1", "epoch": "9f3a01bc", "offset": 44}),
    _server("error", "A command was refused; the connection stays open",
            {"code": {"type": "string", "examples": list(ERROR_CODES)},
             "detail": {"type": "string"}, "id": ID,
             "errors": {"type": "array", "description": "invalid: pydantic's errors",
                        "items": {"type": "object", "required": ["loc", "msg", "type"],
                                  "properties": {
                                      "loc": {"type": "array",
                                              "items": {"type": ["string", "integer"]}},
                                      "msg": {"type": "string"},
                                      "type": {"type": "string"}}}}},
            ("code", "detail"),
            {"code": "invalid", "detail": "1 validation error for ChatIn", "id": 1,
             "errors": [{"loc": ["text"], "msg": "Field required", "type": "missing"}]}),
    _server("pong", "The answer to a ping", {"id": ID}, (), {"id": 4}),
    _server("refreshed", "The new token was accepted",
            {"expires_in": {"type": "number", "description": "Seconds the token is valid"},
             "id": ID}, ("expires_in",), {"expires_in": 3600, "id": 7}),
)

BY_KEY = {frame.key: frame for frame in FRAMES}
