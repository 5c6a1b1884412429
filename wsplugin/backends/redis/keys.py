"""Key and channel names. Everything shares one prefix, so several apps can share a Redis."""

from __future__ import annotations


class Keys:
    """``{prefix}:room:{room}`` channels, one control channel per node, the registry keys."""

    __slots__ = ("events", "nodes", "prefix", "room_prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.room_prefix = f"{prefix}:room:"
        self.events = f"{prefix}:events"  # channel: batched lifecycle events of every node
        self.nodes = f"{prefix}:nodes"  # sorted set: node id -> last heartbeat (unix time)

    def room(self, room: str) -> str:
        return self.room_prefix + room

    def room_of(self, channel: str) -> str | None:
        """The room of a room channel, None for any other channel."""
        if channel.startswith(self.room_prefix):
            return channel[len(self.room_prefix) :]
        return None

    def control(self, node: str) -> str:
        return f"{self.prefix}:ctl:{node}"

    def node(self, node: str) -> str:
        """Hash: id, host, pid, started, last_heartbeat, connections, stats, broker (JSON)."""
        return f"{self.prefix}:node:{node}"

    def conns(self, node: str) -> str:
        """Hash: connection id -> ConnectionInfo as JSON, for the connections of one node."""
        return f"{self.prefix}:conns:{node}"

    def rooms(self, node: str) -> str:
        """Hash: room -> number of members on one node."""
        return f"{self.prefix}:rooms:{node}"

    def user(self, user_id: str) -> str:
        """Sorted set: the connection ids of one user, each scored by when its claim
        expires (Redis time, ms), for ``max_connections_per_user``."""
        return f"{self.prefix}:user:{user_id}"
