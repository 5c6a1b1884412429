"""Users: who a connection belongs to, across tabs, devices and nodes.

``authenticate`` returns a :class:`User` (or a plain ``str``, the user id); every connection
of one user shares its id, so presence counts the user once, ``send_user`` and ``kick_user``
reach all of their connections, and ``max_connections_per_user`` bounds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsplugin.types import Identity

MAX_USER_ID_LENGTH = 256
"""The longest user id (characters); a longer one refuses the handshake."""


@dataclass(frozen=True, slots=True)
class User:
    """The user behind a connection: a stable ``id`` and public profile ``info``.

    ``info`` (a name, an avatar URL...) is shown to the other members of presence rooms and
    in the admin dashboard: never put secrets in it. It must be a JSON object of at most
    ``max_user_info_bytes`` (1,024 by default).
    """

    id: str
    info: dict[str, Any] | None = None


class BadUser(ValueError):
    """What ``authenticate`` returned cannot be a user (the handshake is refused)."""


def user_of(identity: Identity, max_info_bytes: int) -> User | None:
    """The user of an identity: a :class:`User`, a ``str`` (the id), or ``None`` (anything
    else: an identity without a user). :class:`BadUser` for an invalid id or ``info``."""
    if isinstance(identity, User):
        _check_id(identity.id)
        return User(identity.id, _checked_info(identity.info, max_info_bytes))
    if isinstance(identity, str):
        _check_id(identity)
        return User(identity)
    return None


def _check_id(user_id: object) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise BadUser("a user id must be a non-empty string")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise BadUser(f"a user id has at most {MAX_USER_ID_LENGTH} characters")


def _checked_info(info: object, max_bytes: int) -> dict[str, Any] | None:
    if info is None:
        return None
    if not isinstance(info, Mapping):
        raise BadUser("User.info must be a JSON object (a dict) or None")
    try:
        text = json.dumps(dict(info), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadUser(f"User.info must be JSON-serialisable: {exc}") from None
    size = len(text.encode())
    if size > max_bytes:
        raise BadUser(f"User.info is {size} bytes of JSON, more than max_user_info_bytes "
                      f"({max_bytes})")
    checked: dict[str, Any] = json.loads(text)  # a copy: later changes do not leak in
    return checked


class UserLimitReached(Exception):
    """The user already has ``max_connections_per_user`` connections (in the cluster).

    Raised by ``manager.connect(websocket, identity=...)``; the managed endpoint refuses
    the handshake instead (HTTP 403, counted as ``user_limit``).
    """

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(f"user {user_id!r} already has {limit} connection(s), the "
                         f"max_connections_per_user setting")
        self.user_id = user_id
        self.limit = limit
