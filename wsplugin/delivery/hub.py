"""The hub: which local connection is in which room, and local delivery.

Pure bookkeeping plus one loop. No I/O is awaited here: a message is encoded once by the
caller, then handed to each member's :meth:`Connection.deliver`.
"""

from __future__ import annotations

from wsplugin.delivery.connection import Connection
from wsplugin.types import ASGIMessage


class Room:
    """Local members of one room and its counters."""

    __slots__ = ("dropped", "members", "messages", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Connection] = {}
        self.messages = 0
        self.dropped = 0


class Hub:
    __slots__ = ("connections", "rooms")

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.rooms: dict[str, Room] = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def remove(self, conn: Connection) -> list[str]:
        """Forget a connection; returns the rooms it left (in order)."""
        self.connections.pop(conn.id, None)
        left = sorted(conn.rooms)
        for name in left:
            self._discard(conn, name)
        conn.rooms.clear()
        return left

    def join(self, conn: Connection, name: str) -> bool:
        """Add ``conn`` to room ``name``; False if it already was a member."""
        if name in conn.rooms:
            return False
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        room.members[conn.id] = conn
        conn.rooms.add(name)
        return True

    def leave(self, conn: Connection, name: str) -> bool:
        if name not in conn.rooms:
            return False
        conn.rooms.discard(name)
        self._discard(conn, name)
        return True

    def _discard(self, conn: Connection, name: str) -> None:
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
