"""Where a connection token travels, and how long it lasts.

Never in the URL (access logs, proxies and browser history keep URLs): a browser sends it
in its first frame, ``{"type":"connect","token":"..."}``, within ``auth_timeout`` seconds
of the accept; another client may send ``Authorization: Bearer <token>`` with the
handshake. A connection with an expiring token is closed 4001 ``token expired`` once
``exp`` plus ``refresh_grace`` passes without a valid ``refresh``: each node enforces its
own connections with one ``call_later`` timer per connection, cancelled when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from wsplugin import protocol as p
from wsplugin.auth.tokens import BAD_TOKEN, NO_TOKEN, Grant, TokenAuth, TokenError, grant_of
from wsplugin.delivery.connection import Connection
from wsplugin.protocol import CloseCode, ProtocolError
from wsplugin.types import ASGIReceive

logger = logging.getLogger("wsplugin")

TOKEN_QUERY = "token"
"""A URL query parameter a token-authenticated endpoint refuses (HTTP 403)."""


class ClientGone(Exception):
    """The client disconnected before sending its token."""


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def receive_connect(receive: ASGIReceive, within: float, max_bytes: int) -> str:
    """The token of the client's first frame, ``{"type":"connect","token":"..."}``.

    :class:`TokenError` (``no token``) for any other frame or none within ``within``
    seconds; ``bad token`` for a ``token`` that is not a string; :class:`ClientGone`.
    """
    try:
        async with asyncio.timeout(within):
            message = await receive()
            while message["type"] not in ("websocket.receive", "websocket.disconnect"):
                message = await receive()
    except TimeoutError:
        raise TokenError(NO_TOKEN) from None
    if message["type"] == "websocket.disconnect":
        raise ClientGone()
    text = message.get("text")
    if not isinstance(text, str) or len(text) > max_bytes:
        raise TokenError(NO_TOKEN)
    try:
        command = p.parse_command(text)
    except ProtocolError:
        raise TokenError(NO_TOKEN) from None
    if command["type"] != "connect" or command.get("token") is None:
        raise TokenError(NO_TOKEN)
    token = command["token"]
    if not isinstance(token, str) or not token:
        raise TokenError(BAD_TOKEN)
    return token


async def verify(auth: TokenAuth, token: str, max_info_bytes: int) -> Grant:
    """What ``token`` grants; :class:`TokenError` with the reason it does not."""
    try:
        claims = await auth.claims(token)
    except TokenError:
        raise
    except Exception as exc:  # a verifier's own bug: refused all the same, never echoed
        logger.warning("wsplugin: token verification failed: %s", type(exc).__name__)
        raise TokenError(BAD_TOKEN) from None
    return grant_of(claims, max_info_bytes)


class TokenSession:
    """The token of one open connection: its grant, and the timer that closes the
    connection (4001 ``token expired``) at ``exp`` plus ``grace`` seconds."""

    __slots__ = ("_timer", "conn", "grace", "grant")

    def __init__(self, conn: Connection, grant: Grant, grace: float) -> None:
        self.conn = conn
        self.grant = grant
        self.grace = grace
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        expires_at = self.grant.expires_at
        if expires_at is None:
            return
        delay = max(0.0, expires_at + self.grace - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if not self.conn.closed:
            logger.info("wsplugin: token of %s expired", self.conn.id)
            self.conn.close(CloseCode.UNAUTHORIZED, "token expired")

    def replace(self, grant: Grant) -> None:
        """A refresh: ``grant`` (same user) replaces the old one, with its expiry."""
        self.cancel()
        self.grant = grant
        self.conn.expires_at = grant.expires_at
        self._arm()

    def withdrawn(self, grant: Grant) -> list[str]:
        """The rooms of the connection that ``grant`` no longer allows."""
        return sorted(room for room in self.conn.rooms if not grant.allows(room))

    def cancel(self) -> None:
        """The connection closed (or its grant is replaced): no timer outlives it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def expiry_fields(grant: Grant) -> dict[str, Any]:
    """``expires_in`` for ``welcome``/``refreshed`` when the token has ``exp``."""
    expires_in = grant.expires_in()
    return {} if expires_in is None else {"expires_in": expires_in}
