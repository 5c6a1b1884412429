"""Per-room publish rates: one token bucket per connection per room with a ``rate_limit``.

A bucket exists only while its connection is a member of the room (the membership path
forgets it on a leave, the close of a connection forgets all of its), so the buckets are
bounded by the memberships of rate-limited rooms.
"""

from __future__ import annotations

from wsplugin.delivery.inbound import TokenBucket


class RoomRates:
    """Connection id -> room -> :class:`TokenBucket`."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str, dict[str, TokenBucket]] = {}

    def allow(self, connection_id: str, room: str, rate: tuple[int, float]) -> bool:
        """Take one token of this connection's bucket in ``room``; False when it is empty."""
        rooms = self._buckets.get(connection_id)
        if rooms is None:
            rooms = self._buckets[connection_id] = {}
        bucket = rooms.get(room)
        if bucket is None:
            bucket = rooms[room] = TokenBucket(*rate)
        return bucket.allow()

    def forget(self, connection_id: str, room: str | None = None) -> None:
        """Drop the bucket of ``room`` (a leave), or every bucket of the connection (a close)."""
        if room is None:
            self._buckets.pop(connection_id, None)
            return
        rooms = self._buckets.get(connection_id)
        if rooms is not None and rooms.pop(room, None) is not None and not rooms:
            del self._buckets[connection_id]

    def __len__(self) -> int:
        """How many buckets exist (for tests and stats)."""
        return sum(len(rooms) for rooms in self._buckets.values())
