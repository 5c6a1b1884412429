"""The presence contract of a broker, and its in-memory implementation.

A presence store keeps, per room, the connections present (with their user), the users the
members were told about (``announced``: joined, not yet left, grace included), the users in
their grace period, and whether the room is occupied. Every change a call makes is
returned as a :class:`Change` exactly once, cluster-wide: the node that made it emits the
events and announces it to every node's sink, which batches it into ``presence_diff``
frames for its local members.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from wsplugin.presence import PresenceStats, UserPresence

Info = dict[str, Any] | None


@dataclass(slots=True)
class Change:
    """What one store call changed in ``room``: users who joined (with their info) or
    left, and whether the room became occupied (first member) or vacated (last one gone)."""

    room: str
    joins: dict[str, Info] = field(default_factory=dict)
    leaves: list[str] = field(default_factory=list)
    occupied: bool = False
    vacated: bool = False

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves or self.occupied or self.vacated)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's presence: ``users`` (``None`` when there are more than ``max_list``),
    and the counts."""

    users: dict[str, UserPresence] | None
    stats: PresenceStats


class PresenceSink(Protocol):
    def on_presence(self, change: Change) -> None:
        """A change made by any node (this one included)."""


class PresenceStore(abc.ABC):
    sink: PresenceSink | None = None

    @abc.abstractmethod
    async def add(self, room: str, conn_id: str, user: str | None, info: Info,
                  grace: float) -> Change:
        """``conn_id`` (of ``user``, or anonymous) entered ``room``."""

    @abc.abstractmethod
    async def remove(self, room: str, conn_id: str) -> float | None:
        """``conn_id`` left ``room``: seconds until :meth:`sweep` may find a leave (or a
        vacated room) due, ``None`` if nothing is pending."""

    @abc.abstractmethod
    async def sweep(self, room: str) -> Change:
        """The leaves (and the vacated room) whose grace period is over."""

    async def sweep_due(self) -> list[Change]:
        """Rooms that need a sweep nobody scheduled (a node that died): their changes."""
        return []

    async def refresh(self, rooms: Iterable[str]) -> None:
        """This node still has members in ``rooms`` (its heartbeat)."""
        return None

    @abc.abstractmethod
    async def snapshot(self, room: str, max_list: int) -> Snapshot:
        """The room's users (each with connections and info) and counts, cluster-wide."""

    @abc.abstractmethod
    async def stats(self, room: str) -> PresenceStats:
        """The room's counts, cluster-wide."""

    @abc.abstractmethod
    def announce(self, change: Change) -> None:
        """Hand ``change`` to every node's sink (this one included)."""


class _Room:
    __slots__ = ("announced", "conns", "grace", "leaving", "occupied", "users", "vacate_at")

    def __init__(self, grace: float) -> None:
        self.conns: dict[str, str | None] = {}  # connection id -> user id
        self.users: dict[str, int] = {}  # user id -> connections here
        self.announced: dict[str, Info] = {}  # user id -> info: joined, not yet left
        self.leaving: dict[str, float] = {}  # user id -> when the grace period ends
        self.occupied = False
        self.vacate_at: float | None = None
        self.grace = grace


class MemoryPresence(PresenceStore):
    """One process: the rooms in a dict; a room's state goes when it is empty."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._rooms: dict[str, _Room] = {}

    async def add(self, room: str, conn_id: str, user: str | None, info: Info,
                  grace: float) -> Change:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room(grace)
        change = Change(room)
        if conn_id in state.conns:
            return change
        state.conns[conn_id] = user
        state.vacate_at = None
        if not state.occupied:
            state.occupied = change.occupied = True
        if user is not None:
            state.users[user] = state.users.get(user, 0) + 1
            state.leaving.pop(user, None)
            if user not in state.announced:
                state.announced[user] = change.joins[user] = info
        return change

    async def remove(self, room: str, conn_id: str) -> float | None:
        state = self._rooms.get(room)
        if state is None or conn_id not in state.conns:
            return None
        user = state.conns.pop(conn_id)
        now = self.clock()
        if user is not None:
            left = state.users[user] - 1
            if left:
                state.users[user] = left
            else:
                del state.users[user]
                state.leaving[user] = now + state.grace
        if not state.conns:
            state.vacate_at = now + state.grace
        return state.grace if state.leaving or state.vacate_at is not None else None

    async def sweep(self, room: str) -> Change:
        change = Change(room)
        state = self._rooms.get(room)
        if state is None:
            return change
        now = self.clock()
        for user, due in list(state.leaving.items()):
            if due <= now:
                del state.leaving[user]
                if user not in state.users:  # no connection came back in time
                    state.announced.pop(user, None)
                    change.leaves.append(user)
        if state.vacate_at is not None and state.vacate_at <= now and not state.conns:
            state.vacate_at = None
            if state.occupied:
                state.occupied = False
                change.vacated = True
        if not state.conns and not state.announced and not state.leaving:
            del self._rooms[room]
        return change

    async def snapshot(self, room: str, max_list: int) -> Snapshot:
        state = self._rooms.get(room)
        if state is None:
            return Snapshot({}, PresenceStats(0, 0))
        stats = PresenceStats(len(state.announced), len(state.conns))
        if len(state.announced) > max_list:
            return Snapshot(None, stats)
        users = {user: UserPresence(state.users.get(user, 0), info)
                 for user, info in state.announced.items()}
        return Snapshot(users, stats)

    async def stats(self, room: str) -> PresenceStats:
        state = self._rooms.get(room)
        if state is None:
            return PresenceStats(0, 0)
        return PresenceStats(len(state.announced), len(state.conns))

    def announce(self, change: Change) -> None:
        if self.sink is not None:
            self.sink.on_presence(change)
