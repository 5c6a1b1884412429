"""What crosses Redis: a compact binary header and the frame, encoded once by the publisher.

Every payload is a list of length-prefixed fields (4-byte big-endian length, then bytes),
so ids and frames never need escaping. The first field says what the payload is:

- room message: ``t``/``b`` (text or binary frame), node id, frame, excluded ids...
- history room message: ``h``, node id, excluded ids joined by ``,``, then (not length
  prefixed: appended by the publish script) ``<epoch> <offset> <frame>``
- command request: ``Q``, reply-to node, request id, op, connection id, room, reason,
  frame kind (``t``/``b``/``-``), frame, user id (empty: none; a request without this
  last field, from an older node, is read as having none)
- command reply: ``R``, request id, count (decimal: ``1``/``0`` for one connection, the
  number of a user's connections for ``send_user``/``kick_user``)
- self-ping: ``P``, token
- event batch: ``E``, node id, JSON list
- presence change: ``p``, JSON ``{"j": {user: info}, "l": [user, ...]}``
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import cast

from wsplugin.backends.base import Command, CommandOp
from wsplugin.types import Frame

_LEN = struct.Struct(">I")
_OPS: frozenset[str] = frozenset({"send", "kick", "join", "leave", "send_user", "kick_user"})


class WireError(ValueError):
    """A payload that this version cannot read (ignored and counted by the listener)."""


def pack(*fields: bytes) -> bytes:
    """Join fields, each prefixed with its length."""
    parts: list[bytes] = []
    for field in fields:
        parts.append(_LEN.pack(len(field)))
        parts.append(field)
    return b"".join(parts)


def unpack(data: bytes) -> list[bytes]:
    """Split a payload made by :func:`pack`."""
    fields: list[bytes] = []
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        if pos + 4 > end:
            raise WireError("truncated length")
        (size,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + size > end:
            raise WireError("truncated field")
        fields.append(bytes(view[pos : pos + size]))
        pos += size
    return fields


def frame_kind(frame: Frame | None) -> bytes:
    if frame is None:
        return b"-"
    return b"b" if isinstance(frame, bytes) else b"t"


def frame_bytes(frame: Frame | None) -> bytes:
    if frame is None:
        return b""
    return frame if isinstance(frame, bytes) else frame.encode()


def frame_from(kind: bytes, raw: bytes) -> Frame | None:
    if kind == b"t":
        return raw.decode()
    if kind == b"b":
        return raw
    if kind == b"-":
        return None
    raise WireError(f"unknown frame kind {kind!r}")


@dataclass(frozen=True, slots=True)
class RoomMessage:
    node: str
    frame: Frame
    exclude: frozenset[str]


def encode_room_message(node: str, frame: Frame, exclude: frozenset[str]) -> bytes:
    return pack(
        frame_kind(frame), node.encode(), frame_bytes(frame), *(x.encode() for x in exclude)
    )


def room_message_node(data: bytes) -> bytes:
    """The publisher of a room message, read without decoding the rest (own echoes)."""
    if len(data) < 9:
        raise WireError("not a room message")
    (size,) = _LEN.unpack_from(data, 5)
    return data[9 : 9 + size]


def decode_room_message(data: bytes) -> RoomMessage:
    fields = unpack(data)
    if len(fields) < 3 or fields[0] not in (b"t", b"b"):
        raise WireError("not a room message")
    frame = frame_from(fields[0], fields[2])
    assert frame is not None
    exclude = frozenset(x.decode() for x in fields[3:])
    return RoomMessage(fields[1].decode(), frame, exclude)


STREAM = b"h"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    node: str
    exclude: frozenset[str]
    epoch: str
    offset: int
    frame: str


def is_stream_message(data: bytes) -> bool:
    """A history room's message (its first field is ``h``), told apart without decoding."""
    return data[4:5] == STREAM


def encode_stream_head(node: str, exclude: frozenset[str]) -> bytes:
    """What the publish script puts before ``<epoch> <offset> <frame>``."""
    return pack(STREAM, node.encode(), ",".join(sorted(exclude)).encode())


def decode_stream_message(data: bytes) -> StreamMessage:
    fields, end = _take(data, 3)
    if fields[0] != STREAM:
        raise WireError("not a history room message")
    try:
        epoch, offset, frame = data[end:].split(b" ", 2)
        number = int(offset)
    except ValueError:
        raise WireError("truncated history room message") from None
    exclude = frozenset(x for x in fields[2].decode().split(",") if x)
    return StreamMessage(fields[1].decode(), exclude, epoch.decode(), number, frame.decode())


def _take(data: bytes, count: int) -> tuple[list[bytes], int]:
    """The first ``count`` length-prefixed fields and where they end."""
    fields: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise WireError("truncated length")
        (size,) = _LEN.unpack_from(data, pos)
        fields.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if pos > len(data):
        raise WireError("truncated field")
    return fields, pos


@dataclass(frozen=True, slots=True)
class Request:
    reply_to: str
    request_id: str
    command: Command


def encode_request(reply_to: str, request_id: str, command: Command) -> bytes:
    return pack(
        b"Q",
        reply_to.encode(),
        request_id.encode(),
        command.op.encode(),
        command.connection_id.encode(),
        (command.room or "").encode(),
        command.reason.encode(),
        frame_kind(command.frame),
        frame_bytes(command.frame),
        (command.user or "").encode(),
    )


def decode_request(fields: list[bytes]) -> Request:
    if len(fields) not in (9, 10) or fields[0] != b"Q":
        raise WireError("not a command request")
    op = fields[3].decode()
    if op not in _OPS:
        raise WireError(f"unknown op {op!r}")
    command = Command(
        op=cast(CommandOp, op),
        connection_id=fields[4].decode(),
        frame=frame_from(fields[7], fields[8]),
        room=fields[5].decode() or None,
        reason=fields[6].decode(),
        user=(fields[9].decode() or None) if len(fields) == 10 else None,
    )
    return Request(fields[1].decode(), fields[2].decode(), command)


def encode_reply(request_id: str, count: int) -> bytes:
    return pack(b"R", request_id.encode(), str(int(count)).encode())


def decode_reply(fields: list[bytes]) -> tuple[str, int]:
    if len(fields) != 3 or fields[0] != b"R":
        raise WireError("not a command reply")
    try:
        count = int(fields[2])
    except ValueError:
        raise WireError("not a command reply") from None
    if count < 0:
        raise WireError("not a command reply")
    return fields[1].decode(), count


def encode_ping(token: str) -> bytes:
    return pack(b"P", token.encode())


def encode_events(node: str, payload: bytes) -> bytes:
    return pack(b"E", node.encode(), payload)


PRESENCE = b"p"


def is_presence_message(data: bytes) -> bool:
    """A presence change of a room (its first field is ``p``), told apart without decoding."""
    return data[4:5] == PRESENCE


def encode_presence(payload: bytes) -> bytes:
    return pack(PRESENCE, payload)


def decode_presence(data: bytes) -> bytes:
    fields = unpack(data)
    if len(fields) != 2 or fields[0] != PRESENCE:
        raise WireError("not a presence message")
    return fields[1]
