"""History rooms: which rooms keep their recent messages, and the public types of a stream.

A room whose name matches a pattern of the ``history`` setting keeps its last ``size``
messages for ``ttl`` seconds after the last publish. Each of its messages carries an
``offset`` (1, 2, 3... cluster-wide, gap-free) within an ``epoch`` (a random string that
changes whenever the storage lost the stream). ``(epoch, offset)`` is a client's position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wsplugin.patterns import pattern_map
from wsplugin.types import JSON

META_TTL = 30 * 86400
"""Seconds a stream's epoch and top offset outlive its messages, so a position stays checkable."""

MAX_OFFSET = 2**53 - 1
"""The largest offset: exact as a JavaScript number and as a double in Redis' Lua. A stream
never gets there (it would take 9 * 10**15 messages); a larger one asked for is out of range."""


class NoHistory(ValueError):
    """The room keeps no history (no pattern of the ``history`` setting matches it)."""


def check_since(since: object) -> int | None:
    """``since`` of a history read: None, or an integer offset from 0 to :data:`MAX_OFFSET`."""
    if since is None:
        return None
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_OFFSET:
        raise ValueError(f"since must be None or an integer offset from 0 to {MAX_OFFSET}, "
                         f"got {since!r}")
    return since


@dataclass(frozen=True, slots=True)
class History:
    """Keep the last ``size`` messages of a room, for ``ttl`` seconds after its last publish."""

    size: int = 100
    ttl: float = 300.0
    meta_ttl: float = META_TTL

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and not isinstance(self.size, bool) and self.size > 0):
            raise ValueError(f"History.size must be a positive integer, got {self.size!r}")
        for name in ("ttl", "meta_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"History.{name} must be a positive number of seconds, "
                                 f"got {value!r}")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a room's stream is: its ``epoch`` and the ``offset`` of its newest message."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One stored message: its offset and the ``message`` frame as clients received it."""

    offset: int
    frame: str

    @property
    def data(self) -> JSON:
        return json.loads(self.frame)["data"]

    @property
    def sender(self) -> str | None:
        sender: str | None = json.loads(self.frame)["sender"]
        return sender


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What :meth:`WebSocketManager.history` returns: stored messages (oldest first) and
    the position they were read at."""

    room: str
    position: Position
    messages: tuple[HistoryMessage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "epoch": self.position.epoch,
            "offset": self.position.offset,
            "messages": [
                {"offset": m.offset, "data": m.data, "sender": m.sender} for m in self.messages
            ],
        }



def normalise_history(value: Any) -> dict[str, History]:
    """``{"orders-*": History(...)}``, or the same with dicts (``{"size": 100, "ttl": 300}``)."""
    return pattern_map(value, "history", History, frozenset({"size", "ttl", "meta_ttl"}))


def parse_history_env(raw: str) -> dict[str, History]:
    """``WSPLUGIN_HISTORY``: JSON, e.g. ``{"orders-*": {"size": 100, "ttl": 300}}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return normalise_history(value)
