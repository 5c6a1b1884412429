"""The hub: which local connection is in which room and belongs to which user, and local
delivery.

Pure bookkeeping plus one loop. No I/O is awaited here: a message is encoded once by the
caller, then handed to each member's ``deliver``. Writes that wait for the end of the loop
iteration (a fast-path writer's corked frames, a coalescing connection's queue) are
flushed by one :class:`FlushQueue` callback.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, Protocol, TypeVar, overload

from wsplugin.types import ASGIMessage, DropCounter


class Member(Protocol):
    """What the hub needs of a connection."""

    @property
    def id(self) -> str: ...

    @property
    def rooms(self) -> set[str]: ...

    @property
    def user_id(self) -> str | None: ...

    def deliver(self, message: ASGIMessage, size: int, room: DropCounter | None = None) -> bool:
        """Write, hold or queue one shared message; False if it was not taken."""


M = TypeVar("M", bound=Member)


class Room(Generic[M]):
    """Local members of one room and its counters."""

    __slots__ = ("dropped", "members", "messages", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, M] = {}
        self.messages = 0
        self.dropped = 0


class NewestFirst(Sequence[M]):
    """The hub's connections, last connected first, without copying them: its length is
    the hub's, a slice walks only as far as it reaches (``[0:50]`` reads 50 of 20,000).
    A view: it follows the hub as connections come and go."""

    __slots__ = ("_connections",)

    def __init__(self, connections: Mapping[str, M]) -> None:
        self._connections = connections

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[M]:
        return reversed(self._connections.values())  # type: ignore[call-overload,no-any-return]

    @overload
    def __getitem__(self, index: int) -> M: ...

    @overload
    def __getitem__(self, index: slice) -> list[M]: ...

    def __getitem__(self, index: int | slice) -> M | list[M]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return list(self)[index]
            return list(itertools.islice(iter(self), start, max(start, stop)))
        if index < 0:
            index += len(self)
        for conn in itertools.islice(iter(self), index, index + 1):
            return conn
        raise IndexError(index)


class Hub(Generic[M]):
    __slots__ = ("connections", "rooms", "users")

    def __init__(self) -> None:
        self.connections: dict[str, M] = {}
        self.rooms: dict[str, Room[M]] = {}
        self.users: dict[str, dict[str, M]] = {}
        """User id -> that user's local connections (by id); a user without one is absent."""

    def add(self, conn: M) -> None:
        self.connections[conn.id] = conn
        user_id = conn.user_id
        if user_id is not None:
            self.users.setdefault(user_id, {})[conn.id] = conn

    def newest_first(self) -> NewestFirst[M]:
        """Every local connection, last connected first (a view, see :class:`NewestFirst`)."""
        return NewestFirst(self.connections)

    def of_user(self, user_id: str) -> tuple[M, ...]:
        """The local connections of ``user_id`` (a snapshot: safe to close them while looping)."""
        conns = self.users.get(user_id)
        return () if conns is None else tuple(conns.values())

    def remove(self, conn: M) -> list[str]:
        """Forget a connection; returns the rooms it left (in order)."""
        self.connections.pop(conn.id, None)
        self._forget_user(conn)
        left = sorted(conn.rooms)
        for name in left:
            self._discard(conn, name)
        conn.rooms.clear()
        return left

    def _forget_user(self, conn: M) -> None:
        user_id = conn.user_id
        if user_id is None or (conns := self.users.get(user_id)) is None:
            return
        conns.pop(conn.id, None)
        if not conns:
            del self.users[user_id]

    def join(self, conn: M, name: str) -> bool:
        """Add ``conn`` to room ``name``; False if it already was a member."""
        if name in conn.rooms:
            return False
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        room.members[conn.id] = conn
        conn.rooms.add(name)
        return True

    def leave(self, conn: M, name: str) -> bool:
        if name not in conn.rooms:
            return False
        conn.rooms.discard(name)
        self._discard(conn, name)
        return True

    def _discard(self, conn: M, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        room.members.pop(conn.id, None)
        if not room.members:
            del self.rooms[name]

    def deliver(
        self, name: str, message: ASGIMessage, size: int, exclude: frozenset[str] | None
    ) -> int:
        """Hand one prebuilt message to every local member of ``name``; returns how many."""
        room = self.rooms.get(name)
        if room is None:
            return 0
        room.messages += 1
        delivered = 0
        for conn in tuple(room.members.values()):
            if exclude and conn.id in exclude:
                continue
            if conn.deliver(message, size, room):
                delivered += 1
        return delivered

    def deliver_all(self, message: ASGIMessage, size: int, exclude: frozenset[str] | None) -> int:
        delivered = 0
        for conn in tuple(self.connections.values()):
            if exclude and conn.id in exclude:
                continue
            if conn.deliver(message, size):
                delivered += 1
        return delivered


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what waited for the end of the iteration."""


class FlushQueue:
    """The connections waiting for the end of this loop iteration (one callback for all),
    and whether a fast-path writer may write a frame at once.

    Holding a connection's frames until the end of the iteration makes several messages to
    it in one iteration (a burst of publishes read in one go) leave in one write. When
    messages arrive one at a time and the server keeps up, holding saves nothing and costs
    a second pass over the recipients before the last one is written: with 10,000 members,
    milliseconds of latency on every message.

    So the queue counts *rounds* of writes (from the first write after one end-of-iteration
    callback to the next callback) and sets :attr:`direct` for the next round when the
    last one held no second frame for any connection and the loop was idle before it for
    at least as long as the round took. Then a writer writes its first frame of a round at
    once, and holds only a later one (calling :meth:`coalesced`, which turns :attr:`direct`
    off). A busy server, where messages queue up while it writes, keeps holding: there,
    writing several messages in one go is what keeps it ahead.
    """

    __slots__ = ("_coalesced", "_ended_at", "_queue", "_scheduled", "_started_at", "direct",
                 "on_flushed", "round")

    def __init__(self, on_flushed: Callable[[], None] | None = None) -> None:
        self._queue: list[Flushable] = []
        self._scheduled = False
        self._coalesced = False
        self._started_at = self._ended_at = 0.0
        self.direct = True
        """A writer may write its first frame of this round at once."""
        self.round = 0
        """The current round (a writer remembers the round it last wrote in)."""
        self.on_flushed = on_flushed

    def __bool__(self) -> bool:
        """True while a flush is scheduled (frames of this iteration are still held)."""
        return bool(self._queue)

    def schedule(self, conn: Flushable) -> None:
        """Flush ``conn`` at the end of this iteration."""
        self._queue.append(conn)
        if not self._scheduled:
            self.end_round()

    def end_round(self) -> None:
        """Make sure this round ends with this iteration (a writer wrote at once)."""
        if not self._scheduled:
            self._scheduled = True
            self._started_at = time.monotonic()
            asyncio.get_running_loop().call_soon(self._flush)

    def coalesced(self) -> None:
        """A connection got a second frame this round: hold frames for the rest of it."""
        self._coalesced = True
        self.direct = False

    def _flush(self) -> None:
        self._scheduled = False
        self.round += 1
        queue, self._queue = self._queue, []
        for conn in queue:
            conn.flush()
        if self.on_flushed is not None:
            self.on_flushed()
        started, ended = self._started_at, time.monotonic()
        self.direct = not self._coalesced and started - self._ended_at >= ended - started
        self._coalesced = False
        self._ended_at = ended
