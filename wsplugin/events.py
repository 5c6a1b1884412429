"""The local event bus: every lifecycle change is emitted as a typed event.

The admin dashboard (and anything else) subscribes with a plain callback. Callbacks run
synchronously inside the emitter and must not block: copy what you need and return.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

logger = logging.getLogger("wsplugin.events")

EventKind = Literal[
    "connected",  # a connection was accepted (managed or user-owned)
    "disconnected",  # a connection ended, for whatever reason (detail says why)
    "joined",  # a connection joined a room
    "left",  # a connection left a room
    "kicked",  # a connection was kicked (detail: reason)
    "broadcast",  # the server broadcast to a room (room) or everyone (room None)
    "slow_close",  # a connection was closed because its queue overflowed or stalled
    "dropped",  # messages were dropped for a connection (drop_oldest policy)
    "health",  # the broker's health changed (detail: status)
    "user_joined",  # presence: a user's first connection entered a room (identity: user id)
    "user_left",  # presence: a user's last connection left a room and the grace passed
    "room_occupied",  # presence: a presence room got its first member, cluster-wide
    "room_vacated",  # presence: its last member left and the grace passed, cluster-wide
]
EVENT_KINDS: frozenset[EventKind] = frozenset(get_args(EventKind))
"""Every kind, for checking one that arrives from elsewhere (another node, a client)."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    connection_id: str | None = None
    room: str | None = None
    identity: str | None = None
    detail: str = ""
    node: str = ""
    time: float = field(default_factory=time.time)

    @property
    def user(self) -> str | None:
        """The user id of a ``user_joined``/``user_left`` event (else the identity)."""
        return self.identity

    @property
    def info(self) -> Any:
        """The user's public info of a ``user_joined`` event (``detail``, parsed), or None."""
        if self.kind != "user_joined" or not self.detail:
            return None
        try:
            return json.loads(self.detail)
        except ValueError:
            return None


EventHandler = Callable[[Event], None]


class NodeName(Protocol):
    """What names the node whose events a bus emits; read at every emit, so it may change."""

    @property
    def id(self) -> str: ...


class _Fixed:
    __slots__ = ("id",)

    def __init__(self, node: str) -> None:
        self.id = node


class EventBus:
    """A list of callbacks. Emitting with no listener costs one truth test."""

    __slots__ = ("_listeners", "_name")

    def __init__(self, node: str = "") -> None:
        self._listeners: list[EventHandler] = []
        self._name: NodeName = _Fixed(node)

    @property
    def node(self) -> str:
        """The node stamped on every event emitted here."""
        return self._name.id

    @node.setter
    def node(self, node: str) -> None:
        self._name = _Fixed(node)

    def follow(self, name: NodeName) -> None:
        """Name events after ``name`` from now on, whatever it becomes (a broker's node is
        renewed after a fork)."""
        self._name = name

    def subscribe(self, listener: EventHandler) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def __bool__(self) -> bool:
        """Whether anyone listens: ``if events: events.emit(...)`` skips building the
        arguments on hot paths (every connect and close)."""
        return bool(self._listeners)

    def emit(
        self,
        kind: EventKind,
        *,
        connection_id: str | None = None,
        room: str | None = None,
        identity: str | None = None,
        detail: str = "",
    ) -> None:
        if not self._listeners:
            return
        event = Event(kind, connection_id, room, identity, detail, self.node)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break delivery
                logger.exception("event listener %r failed", listener)


def relay(bus: EventBus, event: Event) -> None:
    """Re-emit an event that came from another node, keeping its node and time."""
    for listener in tuple(bus._listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("event listener %r failed", listener)
