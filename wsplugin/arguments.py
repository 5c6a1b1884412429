"""Checks of the names a program hands the Python API (rooms, user ids): a clear
``ValueError`` rather than a wire-protocol error."""

from __future__ import annotations

from wsplugin.protocol import ProtocolError, check_room


def check_user_arg(user_id: object) -> str:
    """Validate a user id given to the Python API: ``ValueError`` unless a non-empty str."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"invalid user id {user_id!r}: a user id is a non-empty string")
    return user_id


def check_room_arg(room: object) -> str:
    """Validate a room name given to the Python API: ``ValueError`` if it breaks the rules."""
    try:
        return check_room(room)
    except ProtocolError as exc:
        raise ValueError(f"invalid room {room!r}: {exc.detail}") from None
