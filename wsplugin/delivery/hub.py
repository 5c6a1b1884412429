"""The hub: which local connection is in which room and belongs to which user, and local
delivery.

Pure bookkeeping plus one loop. No I/O is awaited here: a message is encoded once by the
caller, then handed to each member's ``deliver``. Writes that wait for the end of the loop
iteration (a fast-path writer's corked frames, a coalescing connection's queue, a publish
written in one pass) are done by one :class:`FlushQueue` callback.
"""

from __future__ import annotations

import asyncio
import itertools
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

    def take(self, message: ASGIMessage, size: int, room: DropCounter | None = None) -> bool:
        """Write, hold or queue one shared message of a publish; False if it was not taken."""


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


class Delivery(Generic[M]):
    """One publish handed to its members (a snapshot, taken when it was published)."""

    __slots__ = ("exclude", "members", "message", "room", "size")

    def __init__(self, members: tuple[M, ...], message: ASGIMessage, size: int,
                 room: Room[M] | None, exclude: frozenset[str] | None) -> None:
        self.members = members
        self.message = message
        self.size = size
        self.room = room
        self.exclude = exclude

    def run(self) -> int:
        """Hand the message to every member not excluded; returns how many took it."""
        message, size, room, exclude = self.message, self.size, self.room, self.exclude
        delivered = 0
        for conn in self.members:
            if exclude and conn.id in exclude:
                continue
            if conn.take(message, size, room):
                delivered += 1
        return delivered


class Hub(Generic[M]):
    __slots__ = ("connections", "flushes", "rooms", "users")

    def __init__(self, flushes: FlushQueue | None = None) -> None:
        self.flushes = FlushQueue() if flushes is None else flushes
        """The end-of-iteration writes, which a publish may join (:meth:`FlushQueue.defer`)."""
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
        """Hand one prebuilt message to every local member of ``name``; returns how many
        (a publish written at the end of the iteration: its members not excluded)."""
        room = self.rooms.get(name)
        if room is None:
            return 0
        room.messages += 1
        return self._hand(room.members, message, size, exclude, room)

    def deliver_all(self, message: ASGIMessage, size: int, exclude: frozenset[str] | None) -> int:
        return self._hand(self.connections, message, size, exclude, None)

    def _hand(self, members: dict[str, M], message: ASGIMessage, size: int,
              exclude: frozenset[str] | None, room: Room[M] | None) -> int:
        delivery = Delivery(tuple(members.values()), message, size, room, exclude)
        if not self.flushes.defer(delivery):
            return delivery.run()
        if not exclude:
            return len(members)
        return len(members) - sum(1 for conn_id in exclude if conn_id in members)


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what waited for the end of the iteration."""


class Deferred(Protocol):
    def run(self) -> int:
        """Hand a publish to its members."""


class FlushQueue:
    """What waits for the end of this loop iteration (one callback for all): the
    connections holding frames, and at most one publish.

    Holding a connection's frames until the end of the iteration makes several messages to
    it in one iteration (a burst of publishes read in one go) leave in one write. But a
    message that is alone in its iteration gains nothing from it, and holding it for
    every member costs a second pass over the members before the last one is written:
    with 10,000 members, milliseconds of latency on every message. So the first publish
    of an iteration waits here (:meth:`defer`) and is handed to its members in one pass at
    the end, while :attr:`direct` tells fast-path writers to write at once. Anything that
    writes after it in the same iteration (another publish, a message to one connection,
    a close) first hands it over (:meth:`settle`): its members hold it, and what follows
    is held behind it, in order, as it always was.
    """

    __slots__ = ("_queue", "_scheduled", "direct", "on_flushed", "pending")

    def __init__(self, on_flushed: Callable[[], None] | None = None) -> None:
        self._queue: list[Flushable] = []
        self._scheduled = False
        self.pending: Deferred | None = None
        """The publish written in one pass at the end of this iteration (if nothing follows)."""
        self.direct = False
        """True while that pass runs: a writer writes its frame at once."""
        self.on_flushed = on_flushed

    def __bool__(self) -> bool:
        """True while writes wait for the end of this iteration."""
        return bool(self._queue) or self.pending is not None

    def schedule(self, conn: Flushable) -> None:
        """Flush ``conn`` at the end of this iteration."""
        self._queue.append(conn)
        self._at_end()

    def defer(self, delivery: Deferred) -> bool:
        """Run ``delivery`` at the end of this iteration if nothing else waits for it; else
        :meth:`settle` and return False (the caller runs it now, its frames are held)."""
        if self._scheduled:
            self.settle()
            return False
        self.pending = delivery
        self._at_end()
        return True

    def settle(self) -> None:
        """Something else writes in this iteration: hand the deferred publish over now."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending.run()

    def _at_end(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for conn in queue:
            conn.flush()
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.direct = True
            try:
                pending.run()
            finally:
                self.direct = False
        if self.on_flushed is not None:
            self.on_flushed()
