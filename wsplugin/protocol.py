"""The wire protocol of the managed endpoint: frames, close codes, error codes, room names,
and messages encoded once as the ASGI send event every recipient shares."""

from __future__ import annotations

import json
import math
import re
from enum import IntEnum
from itertools import accumulate
from typing import Any

from wsplugin.types import JSON, ASGIMessage, Data, Frame


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect elsewhere
    POLICY = 1008  # auth, origin, abuse
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012  # sent by uvicorn on shutdown
    KICKED = 4000
    UNAUTHORIZED = 4001  # a connection token missing, invalid or expired; the reason says which
    FORBIDDEN = 4003  # a token's user may not be here (its rooms, max_connections_per_user)
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
NO_PRESENCE = "no_presence"  # presence was asked of a room that does not track it
PUBLISH_FAILED = "publish_failed"  # the broker refused a client's publish (not stored)
BINARY_UNSUPPORTED = "binary_unsupported"
INVALID = "invalid"  # data does not fit the room's publish model (pydantic's errors attached)
TOO_BIG = "too_big"  # data larger than the room's max_message_bytes
RATE_LIMITED = "rate_limited"  # over the room's rate_limit (per connection)
UNAUTHORIZED = "unauthorized"  # a refresh token that is not valid (the detail says why)

ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")

MAX_NESTING = 64
"""The deepest nesting of arrays and objects a client frame may have (the command counts)."""

# One JSON string, closed or running to the end of the text. Possessive quantifiers keep
# the match linear on any input, valid JSON or not.
_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_BRACKET_DEPTH = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
encode_json = _encoder.encode


class ProtocolError(Exception):
    """A client command that gets an ``error`` frame; the connection keeps working."""

    def __init__(self, code: str, detail: str, command_id: Any = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.command_id = command_id


class UnencodableData(TypeError):
    """A value that cannot be sent: not JSON-serialisable (NaN, a set...) nor bytes."""


def is_valid_room(room: object) -> bool:
    return isinstance(room, str) and ROOM_PATTERN.fullmatch(room) is not None


def check_room(room: object) -> str:
    if not isinstance(room, str):
        raise ProtocolError(BAD_REQUEST, "'room' must be a string")
    if ROOM_PATTERN.fullmatch(room) is None:
        raise ProtocolError(BAD_ROOM, "room names are 1 to 128 characters of A-Z a-z 0-9 _ . : -")
    return room


def message_frame(room: str | None, data: JSON, sender: str | None,
                  user: str | None = None) -> str:
    """The ``message`` envelope, encoded once per message (never per recipient); ``user``
    (the publishing client's user id) only when it has one."""
    envelope = {"type": "message", "room": room, "data": data, "sender": sender}
    if user is not None:
        envelope["user"] = user
    return encode_json(envelope)


def reply(kind: str, command_id: Any = None, **fields: Any) -> str:
    frame: dict[str, Any] = {"type": kind, **fields}
    if command_id is not None:
        frame["id"] = command_id
    return encode_json(frame)


def error_frame(code: str, detail: str, command_id: Any = None) -> str:
    return reply("error", command_id, code=code, detail=detail)


def json_size(value: JSON) -> int:
    """The UTF-8 size of ``value`` as compact JSON (a client's data: always encodable)."""
    text = encode_json(value)
    return len(text) if text.isascii() else len(text.encode())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"number {text[:20]}... is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def nests_deeper_than(text: str, limit: int = MAX_NESTING) -> bool:
    """True if arrays and objects in ``text`` nest deeper than ``limit`` levels.

    Brackets inside strings do not count. Free for text with at most ``limit`` brackets
    (two C-level counts); otherwise strings and non-brackets are cut out by regular
    expressions and the depth is a running sum, all at C speed (linear on any input).
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_BRACKET_DEPTH.__getitem__, brackets)), default=0) > limit


def _has_lone_surrogate(text: str, value: Any) -> bool:
    """True if a ``\\uD800``-``\\uDFFF`` escape decoded to a half pair (not UTF-8 text)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:
        encode_json(value).encode()
    except UnicodeEncodeError:
        return True
    return False


def parse_json(text: str) -> Any:
    """Decode strict RFC 8259 JSON; raise ``ProtocolError(BAD_JSON)`` otherwise.

    Refused: invalid syntax, ``NaN``/``Infinity``/``-Infinity``, numbers out of the float
    range, nesting deeper than :data:`MAX_NESTING`, and unpaired surrogate escapes (which
    cannot be sent back as UTF-8 text).
    """
    if nests_deeper_than(text):
        raise ProtocolError(BAD_JSON, f"JSON nests deeper than {MAX_NESTING} levels")
    try:
        value = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"frame is not valid JSON: {_reason(exc)}") from None
    if _has_lone_surrogate(text, value):
        raise ProtocolError(BAD_JSON, "frame is not valid JSON: unpaired surrogate escape")
    return value


def _reason(exc: Exception) -> str:
    message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return message[:100]


def parse_command(text: str) -> dict[str, Any]:
    """Decode one client frame into a command dict with a string ``type``."""
    command = parse_json(text)
    if not isinstance(command, dict):
        raise ProtocolError(BAD_REQUEST, "a command is a JSON object with a 'type'")
    if not isinstance(command.get("type"), str):
        raise ProtocolError(BAD_REQUEST, "a command needs a string 'type'", command.get("id"))
    return command


# ---------------------------------------------------------------- encoded once
def text_message(text: str) -> tuple[ASGIMessage, int]:
    """A prebuilt ASGI send event and its size, shared by every recipient."""
    size = len(text) if text.isascii() else len(text.encode())
    return {"type": "websocket.send", "text": text}, size


def bytes_message(data: bytes) -> tuple[ASGIMessage, int]:
    return {"type": "websocket.send", "bytes": data}, len(data)


def frame_message(frame: Frame) -> tuple[ASGIMessage, int]:
    """The ASGI send event of an encoded frame (text or binary)."""
    return bytes_message(frame) if isinstance(frame, bytes) else text_message(frame)


def encode_head(room: str, data: Data, sender: str | None, user: str | None = None) -> str:
    """A history room's ``message`` frame without its closing brace (the store appends the
    offset). ``UnencodableData`` for bytes (they cannot carry an offset) or non-JSON data."""
    if isinstance(data, bytes | bytearray | memoryview):
        raise UnencodableData(f"room {room!r} keeps history: its messages must be JSON, "
                              "not bytes")
    try:
        frame = message_frame(room, data, sender, user)
        frame.encode()  # UnicodeEncodeError: a lone surrogate
    except (TypeError, ValueError) as exc:
        raise UnencodableData(f"data must be JSON-serialisable: {exc}") from None
    return frame[:-1]


def encode(room: str | None, data: Data, sender: str | None,
           user: str | None = None) -> tuple[ASGIMessage, int, Frame]:
    """Encode a payload once: a ``message`` envelope for JSON values, bytes as they are.

    ``UnencodableData`` if ``data`` is not JSON-serialisable (or holds a lone surrogate).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        message, size = bytes_message(raw)
        return message, size, raw
    try:
        frame = message_frame(room, data, sender, user)
        message, size = text_message(frame)  # UnicodeEncodeError: a lone surrogate
    except (TypeError, ValueError) as exc:
        raise UnencodableData(f"data must be JSON-serialisable or bytes: {exc}") from None
    return message, size, frame
