"""What a connection token grants: a user, an expiry, the rooms the connection may be in.

``authenticate=<a TokenAuth>`` (:class:`~wsplugin.JWTAuth`) turns a token into its verified
claims; :func:`grant_of` reads them, the same way for every kind of token:

- ``sub``: the user id (required);
- ``info``: the user's public info (a JSON object, see :class:`~wsplugin.User`);
- ``exp``: when the connection's token expires (unix time; optional);
- ``rooms``: room globs the connection may be in (optional; absent: any room).

A token that fails is a :class:`TokenError` whose ``reason`` is one of the words below, and
never anything taken from the token itself: reasons reach clients (close frames, error
frames) and logs.
"""

from __future__ import annotations

import abc
import fnmatch
import functools
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsplugin.users import MAX_USER_ID_LENGTH, BadUser, User, user_of

TOKEN_EXPIRED = "token expired"
BAD_SIGNATURE = "bad signature"
"""The signature does not verify, its key is unknown, or its ``alg`` is not allowed (``none``,
an HMAC token signed with an RSA public key...)."""
BAD_AUDIENCE = "bad audience"
BAD_ISSUER = "bad issuer"
MISSING_SUB = "missing sub"
NO_TOKEN = "no token"
BAD_TOKEN = "bad token"
"""Anything else: malformed, not yet valid, a bad ``sub``, ``info``, ``exp`` or ``rooms``."""

MAX_ROOM_GLOBS = 256
"""The most room globs one token may carry (more: ``bad token``)."""


class TokenError(Exception):
    """A token was refused; ``reason`` says why in a few words (safe to show and log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenAuth(abc.ABC):
    """``authenticate=`` for signed connection tokens (see :class:`wsplugin.JWTAuth`).

    The managed endpoint takes the token from the client's first frame (``connect``) or
    an ``Authorization: Bearer`` header, never from the URL, and checks it again on every
    ``refresh``.
    """

    @abc.abstractmethod
    async def claims(self, token: str) -> Mapping[str, Any]:
        """The verified claims of ``token``; :class:`TokenError` if it is not valid."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one valid token grants a connection."""

    user: User
    expires_at: float | None
    """Unix time of the token's ``exp``; ``None``: the token does not expire."""
    rooms: tuple[str, ...] | None
    """Room globs the connection may be in; ``None``: no limit (``authorize`` still applies)."""

    def allows(self, room: str) -> bool:
        """Whether the token lets its connection be in ``room``."""
        return self.rooms is None or _room_pattern(self.rooms).match(room) is not None

    def expires_in(self, now: float | None = None) -> int | None:
        """Whole seconds until ``exp`` (never negative); ``None`` without ``exp``."""
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - (time.time() if now is None else now)))


def grant_of(claims: Mapping[str, Any], max_info_bytes: int) -> Grant:
    """Read the claims of a verified token; :class:`TokenError` for a missing or bad one."""
    sub = claims.get("sub")
    if sub is None:
        raise TokenError(MISSING_SUB)
    if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID_LENGTH:
        raise TokenError(BAD_TOKEN)
    try:
        user = user_of(User(sub, claims.get("info")), max_info_bytes)
    except BadUser:
        raise TokenError(BAD_TOKEN) from None
    assert user is not None
    return Grant(user, _expiry(claims.get("exp")), _rooms(claims.get("rooms")))


def _expiry(exp: Any) -> float | None:
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or exp != exp:
        raise TokenError(BAD_TOKEN)
    return float(exp)


def _rooms(rooms: Any) -> tuple[str, ...] | None:
    if rooms is None:
        return None
    if not isinstance(rooms, Sequence) or isinstance(rooms, str) \
            or len(rooms) > MAX_ROOM_GLOBS:
        raise TokenError(BAD_TOKEN)
    if not all(isinstance(glob, str) and 0 < len(glob) <= 256 for glob in rooms):
        raise TokenError(BAD_TOKEN)
    return tuple(rooms)


@functools.lru_cache(maxsize=1024)
def _room_pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a token's room globs, compiled once per distinct set."""
    if not globs:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(fnmatch.translate(glob) for glob in globs))
