"""Shared type aliases and the protocols of the user hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias

JSON: TypeAlias = Any
"""Any JSON-serialisable value."""

Data: TypeAlias = Any
"""What a user sends: a JSON value (wrapped in a ``message`` envelope) or ``bytes`` (sent as is)."""

Frame: TypeAlias = str | bytes
"""One encoded WebSocket frame: text or binary."""

ASGIMessage: TypeAlias = MutableMapping[str, Any]
ASGISend: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]
ASGIReceive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]

Identity: TypeAlias = Any
"""Whatever ``authenticate`` returns; shown as ``str(identity)`` in listings."""

AuthenticateHook: TypeAlias = Callable[..., Any]
"""``(websocket) -> identity | None``, sync or async, or any FastAPI dependency."""

AuthorizeHook: TypeAlias = Callable[..., Any]
"""``(identity, room) -> bool``, sync or async."""

MessageHook: TypeAlias = Callable[..., Any]
"""``(connection, room, data) -> data``, sync or async; raise ``ValueError`` to reject."""


class DropCounter(Protocol):
    """Where the drops of a message are also counted (its room): one integer to bump.

    The delivery mechanisms (outbox, writers) carry it beside each message without knowing
    what it is.
    """

    dropped: int
