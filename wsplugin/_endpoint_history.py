"""The managed endpoint's hooks for history rooms (issue 11): the position in ``welcome``
and ``joined``, recovery from ``epoch``/``offset``, and the ``published`` acknowledgement.

Plain rooms take the same paths as before, plus ``published`` for a publish that has an id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsplugin import protocol as p
from wsplugin.connection import Connection
from wsplugin.manager import WebSocketManager, encode
from wsplugin.protocol import ProtocolError, error_frame, reply
from wsplugin.streams import PUBLISH_FAILED

MAX_OFFSET_DIGITS = 16
"""Digits of the largest offset (2**53 - 1, the largest integer a JavaScript number holds)."""


def _query_position(query: Mapping[str, str]) -> tuple[str, int] | None:
    """``?epoch=<e>&offset=<n>``; a malformed offset can only fail to recover.

    The offset must be 1 to 16 ASCII digits: ``str.isdigit`` alone accepts other scripts'
    digits (``²``, ``٣``) that ``int`` refuses or reads, and ``int`` refuses more than 4,300
    digits. Anything else is offset -1, which no stream has (``recovered: false``).
    """
    epoch = query.get("epoch")
    if epoch is None:
        return None
    raw = query.get("offset", "")
    valid = len(raw) <= MAX_OFFSET_DIGITS and raw.isascii() and raw.isdigit()
    return epoch, int(raw) if valid else -1


def _command_position(command: dict[str, Any]) -> tuple[str, int] | None:
    if "epoch" not in command and "offset" not in command:
        return None
    epoch, offset = command.get("epoch"), command.get("offset")
    if not isinstance(epoch, str) or isinstance(offset, bool) or not isinstance(offset, int):
        raise ProtocolError(p.BAD_REQUEST, "recovery needs a string 'epoch' and an integer "
                            "'offset'", command.get("id"))
    return epoch, offset


async def join_url_room(
    manager: WebSocketManager, conn: Connection, room: str, query: Mapping[str, str]
) -> None:
    """Send ``welcome`` (first frame) and join the endpoint's room."""
    head: dict[str, Any] = {"type": "welcome", "connection_id": conn.id, "rooms": [room]}
    spec = manager.streams.spec(room)
    if spec is None:
        conn.deliver_text(p.encode_json(head))
        await manager.join_local(conn, room)
        return
    await manager.streams.join(conn, room, spec, head, _query_position(query))


async def join_room(manager: WebSocketManager, conn: Connection, room: str,
                    command: dict[str, Any]) -> None:
    """A ``join`` command that passed its checks: join and answer ``joined``."""
    spec = manager.streams.spec(room)
    if spec is None:
        if room not in conn.rooms:
            await manager.join_local(conn, room)
        conn.deliver_text(reply("joined", command.get("id"), room=room))
        return
    head: dict[str, Any] = {"type": "joined", "room": room}
    if command.get("id") is not None:
        head["id"] = command["id"]
    await manager.streams.join(conn, room, spec, head, _command_position(command))


async def client_publish(manager: WebSocketManager, conn: Connection, room: str, data: Any,
                         exclude: frozenset[str] | None, command_id: Any) -> None:
    """A client's ``publish``; with an ``id``, ``published`` once the backend accepted it."""
    spec = manager.streams.spec(room)
    if spec is not None:
        manager.streams.publish_from(conn, room, spec, data, exclude, command_id)
        return
    if command_id is None:  # not acknowledged: not waited for either
        await manager.publish(room, data, exclude=exclude, sender=conn.id, wait=False)
        return
    message, size, frame = encode(room, data, conn.id)
    manager.hub.deliver(room, message, size, exclude)
    try:
        await manager.broker.publish(room, frame, exclude or frozenset())
    except Exception as exc:
        manager._publish_failed(exc)
        conn.deliver_text(error_frame(PUBLISH_FAILED, f"not published: {exc!r}", command_id))
        return
    conn.deliver_text(reply("published", command_id, room=room, offset=None))
