"""Presence: who is online in a room, per user across tabs, devices and nodes.

A room whose name matches a pattern of the ``presence`` setting tracks its members. A user
*joins* when their first connection enters the room and *leaves* when their last one has
gone and ``grace`` seconds passed without one coming back, so a reload, a second tab or a
reconnect emits nothing. Members get a snapshot when they join, then ``presence_diff``
frames (with ``join_leave``), at most one per ``presence_interval`` per room. See
docs/presence.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wsplugin.patterns import pattern_map


@dataclass(frozen=True, slots=True)
class Presence:
    """Presence options of a room pattern.

    ``join_leave``: members get ``presence_diff`` frames. ``grace``: seconds a user's last
    connection may be gone before they leave. ``max_list``: above this many users the
    snapshot omits the list (``"truncated": true``) and only counts.
    """

    join_leave: bool = True
    grace: float = 5.0
    max_list: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.join_leave, bool):
            raise ValueError(f"Presence.join_leave must be True or False, got {self.join_leave!r}")
        grace = self.grace
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 3600:
            raise ValueError(f"Presence.grace must be 0 to 3600 seconds, got {grace!r}")
        size = self.max_list
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"Presence.max_list must be a non-negative integer, got {size!r}")


@dataclass(frozen=True, slots=True)
class UserPresence:
    """One user online in a room: their connections there (0 during the grace period)
    and their public ``info``."""

    connections: int
    info: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """How many users (each counted once) and connections a room has, cluster-wide."""

    users: int
    connections: int



def normalise_presence(value: Any) -> dict[str, Presence]:
    """``{"chat-*": Presence(...)}``, a list of patterns (default options), or dicts."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        value = dict.fromkeys(value, Presence())
    return pattern_map(value, "presence", Presence,
                       frozenset({"join_leave", "grace", "max_list"}))


def parse_presence_env(raw: str) -> dict[str, Presence]:
    """``WSPLUGIN_PRESENCE``: comma-separated patterns (default options), or JSON."""
    text = raw.strip()
    if not text:
        return {}
    if text.startswith(("{", "[")):
        try:
            return normalise_presence(json.loads(text))
        except ValueError as exc:
            raise ValueError(f"not valid presence JSON: {exc}") from None
    return normalise_presence([part.strip() for part in text.split(",") if part.strip()])
