"""The wire protocol of the managed endpoint: frames, close codes, error codes, room names."""

from __future__ import annotations

import json
import re
from enum import IntEnum
from typing import Any

from wsplugin.types import JSON


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect elsewhere
    POLICY = 1008  # auth, origin, abuse
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012  # sent by uvicorn on shutdown
    KICKED = 4000
    TOO_SLOW = 4008
    RATE_LIMITED = 4029


# Stable machine words of the ``error`` frame.
BAD_JSON = "bad_json"
UNKNOWN_TYPE = "unknown_type"
BAD_REQUEST = "bad_request"
NOT_JOINED = "not_joined"
FORBIDDEN = "forbidden"
BAD_ROOM = "bad_room"
TOO_MANY_ROOMS = "too_many_rooms"
REJECTED = "rejected"  # the on_message hook raised ValueError
BINARY_UNSUPPORTED = "binary_unsupported"

ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
encode_json = _encoder.encode


class ProtocolError(Exception):
    """A client command that gets an ``error`` frame; the connection keeps working."""

    def __init__(self, code: str, detail: str, command_id: Any = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.command_id = command_id


def is_valid_room(room: object) -> bool:
    return isinstance(room, str) and ROOM_PATTERN.fullmatch(room) is not None


def check_room(room: object) -> str:
    if not isinstance(room, str):
        raise ProtocolError(BAD_REQUEST, "'room' must be a string")
    if ROOM_PATTERN.fullmatch(room) is None:
        raise ProtocolError(BAD_ROOM, "room names are 1 to 128 characters of A-Z a-z 0-9 _ . : -")
    return room


def message_frame(room: str | None, data: JSON, sender: str | None) -> str:
    """The ``message`` envelope, encoded once per message (never per recipient)."""
    return encode_json({"type": "message", "room": room, "data": data, "sender": sender})


def reply(kind: str, command_id: Any = None, **fields: Any) -> str:
    frame: dict[str, Any] = {"type": kind, **fields}
    if command_id is not None:
        frame["id"] = command_id
    return encode_json(frame)


def error_frame(code: str, detail: str, command_id: Any = None) -> str:
    return reply("error", command_id, code=code, detail=detail)


def parse_command(text: str) -> dict[str, Any]:
    """Decode one client frame into a command dict with a string ``type``."""
    try:
        command = json.loads(text)
    except ValueError:
        raise ProtocolError(BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(command, dict):
        raise ProtocolError(BAD_REQUEST, "a command is a JSON object with a 'type'")
    if not isinstance(command.get("type"), str):
        raise ProtocolError(BAD_REQUEST, "a command needs a string 'type'", command.get("id"))
    return command
