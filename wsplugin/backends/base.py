"""The broker contract: what the manager needs from a backend, and what it offers back.

The manager never knows which broker it has. A broker carries what must cross process
boundaries: room messages (encoded once, by the publishing node), commands aimed at one
connection on whichever node owns it (or at one user's connections on every node), the
cluster registry (nodes, connections, rooms) and the count of each user's connections
(``max_connections_per_user``).
The in-memory broker is the one-process case where all of that is empty: it answers the
same contract with no-ops and empty views, so the manager has no "is there a cluster?"
branch. Hooks the manager calls for every connection (:meth:`Broker.connection_opened`,
:meth:`Broker.rooms_changed`, :meth:`Broker.connection_closed`) let each backend decide what
that costs: nothing in memory, background registry writes with Redis.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from wsplugin.backends.history_store import HistoryStore
from wsplugin.backends.presence_store import PresenceStore
from wsplugin.events import EventBus
from wsplugin.info import ConnectionInfo
from wsplugin.types import Frame

ALL_ROOMS = "*"
"""The pseudo-room a ``broadcast_all`` is published to; every node subscribes to it."""

CommandOp = Literal["send", "kick", "join", "leave", "send_user", "kick_user"]


@dataclass(frozen=True, slots=True)
class Command:
    """A command for one connection, routed to the node that owns it; or, for
    ``send_user``/``kick_user``, for every connection of one user, run by every node."""

    op: CommandOp
    connection_id: str  # "" for the user commands
    frame: Frame | None = None  # "send" / "send_user": the encoded frame
    room: str | None = None  # "join" / "leave"
    reason: str = ""  # "kick" / "kick_user"
    user: str | None = None  # "send_user" / "kick_user": the user id


class BrokerError(Exception):
    """The broker could not do what was asked (for example, Redis is unreachable)."""


class BrokerHandler(Protocol):
    """What the manager offers the broker: the local side of the cluster."""

    def deliver_remote(self, room: str, frame: Frame, exclude: frozenset[str]) -> int:
        """Deliver a frame published by another node to the local members of ``room``."""
        ...

    async def run_command(self, command: Command) -> int:
        """Run a command here: for one connection, 1 if it was here (else 0); for a user,
        how many of the user's connections were here."""
        ...

    def local_connections(self) -> list[ConnectionInfo]:
        """A snapshot of this node's connections, for the registry."""
        ...

    def local_rooms(self) -> list[str]:
        """The rooms with at least one local member (to resubscribe after a reconnect)."""
        ...

    def local_stats(self) -> dict[str, int]:
        """This node's counters (connections, messages_in/out, dropped...), for ``nodes()``."""
        ...


class LocalConnection(Protocol):
    """What a broker may read of a local connection: its id and a registry snapshot."""

    @property
    def id(self) -> str: ...

    def info(self) -> ConnectionInfo: ...


class Broker(abc.ABC):
    """One small contract, two implementations: ``memory://`` and ``redis://``."""

    scheme: str = ""
    node_id: str = ""

    @abc.abstractmethod
    async def start(self, handler: BrokerHandler) -> None:
        """Connect, subscribe the node's channels, start background tasks."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Unregister this node and release every resource. Safe to call twice."""

    @abc.abstractmethod
    async def publish(self, room: str, frame: Frame, exclude: frozenset[str]) -> None:
        """Send an encoded frame to the other nodes' members of ``room``.

        Must fail fast with :class:`BrokerError` when the broker is unreachable.
        """

    def publish_nowait(
        self,
        room: str,
        frame: Frame,
        exclude: frozenset[str],
        on_error: Callable[[BaseException], None],
    ) -> bool:
        """Queue a publish without waiting for the broker, keeping order with other publishes.

        For a client's own messages: its next frame is read without waiting for a round
        trip. Returns False when the broker cannot (the caller then awaits :meth:`publish`);
        raises :class:`BrokerError` at once when it is known to fail, and reports a later
        failure to ``on_error``.
        """
        return False

    # local changes: the manager reports each one; none of these may block -------------

    @abc.abstractmethod
    def connection_opened(self, conn: LocalConnection) -> None:
        """A local connection opened: record it in the cluster registry, in the background."""

    def connection_changed(self, conn: LocalConnection) -> None:
        """What the registry shows of a local connection changed (a refreshed token's
        expiry): record it again, in the background, as :meth:`connection_opened` does."""
        self.connection_opened(conn)

    @abc.abstractmethod
    async def rooms_changed(self, conn: LocalConnection) -> None:
        """A local connection joined or left a room.

        On return the node receives the messages of every room that has a local member;
        the registry follows in the background. Failures are logged, never raised.
        """

    @abc.abstractmethod
    def connection_closed(self, conn: LocalConnection, rooms: Sequence[str]) -> None:
        """A local connection (a member of ``rooms``) ended: forget it, in the background.

        Not called while the node stops: :meth:`stop` removes the node as a whole.
        """

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None:
        """The first local member joined ``room``: start receiving its messages."""

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """The last local member left ``room``."""

    @abc.abstractmethod
    async def command(self, command: Command) -> bool:
        """Route a command to the node owning ``command.connection_id``; False if unknown."""

    async def command_all(self, command: Command) -> int:
        """Run a user command (``send_user``, ``kick_user``) on every other live node; the
        sum of their counts. A single-process broker has no other node: 0."""
        return 0

    async def claim_user_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Count ``connection_id`` among ``user_id``'s connections in the cluster unless
        the user has ``limit`` there already, atomically (two nodes cannot both take the
        last slot). Held until :meth:`connection_closed` or :meth:`release_user_slot`.

        A single-process broker has nothing to add to the node's own count: True.
        """
        return True

    def release_user_slot(self, connection_id: str) -> None:
        """A claimed connection id never opened (its handshake failed): free its slot, in
        the background."""
        return None

    @abc.abstractmethod
    async def register(self, info: ConnectionInfo) -> None:
        """A local connection opened (or changed rooms): record it in the cluster registry."""

    @abc.abstractmethod
    async def unregister(self, connection_id: str) -> None:
        """A local connection ended: remove it from the cluster registry."""

    @abc.abstractmethod
    async def remote_connections(self, room: str | None = None) -> list[ConnectionInfo]:
        """Connections that live on other nodes (optionally only members of ``room``)."""

    @abc.abstractmethod
    async def remote_rooms(self) -> Mapping[str, int]:
        """Room -> member count on other nodes."""

    async def nodes(self) -> list[dict[str, Any]]:
        """Other live nodes: id, host, pid, started, last_heartbeat, connections, stats."""
        return []

    def attach_events(self, bus: EventBus) -> None:
        """Optionally relay local events to other nodes and re-emit theirs on ``bus``.

        Remote events keep their ``node``; local listeners (the admin) see the whole cluster.
        """
        return None

    def history_store(self) -> HistoryStore | None:
        """The store of history rooms (see docs/history.md); None: not supported."""
        return None

    def presence_store(self) -> PresenceStore | None:
        """The store of presence rooms (see docs/presence.md); None: not supported."""
        return None

    @abc.abstractmethod
    async def health(self) -> dict[str, Any]:
        """``status`` (ok/degraded), ``backend``, ``subscribed``, ``last_self_ping_age``..."""
