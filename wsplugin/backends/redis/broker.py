"""The Redis broker: the :class:`~wsplugin.backends.base.Broker` the manager sees.

Per process: one pub/sub connection (supervised by :class:`.Listener`) subscribed to the
room channels that have local members, the all-rooms channel, this node's control channel
and the cluster events channel; a small pool for PUBLISH (pipelined, failing fast) and the
registry. :class:`RedisBroker` composes the parts and delegates to them:

- :class:`.RoomChannels`: room messages out and in, room subscriptions, the history store;
- :class:`.Controller`: the control channel, commands routed to the node that owns them
  (a user's commands: to every node);
- :class:`.Cluster`: this node's registry entries and user slots, heartbeat, the views of
  other nodes;
- :class:`.Supervisor`: the self-ping, deaf detection, status and health;
- :class:`.EventRelay`: lifecycle events to and from other nodes.

Every part reads the one :class:`.Node`; a broker built before a fork renews it at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wsplugin.backends.base import Broker, BrokerHandler, Command, LocalConnection
from wsplugin.backends.history_store import HistoryStore
from wsplugin.backends.presence_store import PresenceStore
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.cluster import Cluster
from wsplugin.backends.redis.controller import Controller
from wsplugin.backends.redis.events import EventRelay
from wsplugin.backends.redis.history import RedisHistory
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.listener import Backoff, Listener
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.presence import RedisPresence
from wsplugin.backends.redis.publisher import Publisher
from wsplugin.backends.redis.registry import Registry
from wsplugin.backends.redis.rooms import RoomChannels
from wsplugin.backends.redis.supervisor import Supervisor
from wsplugin.events import EventBus
from wsplugin.info import ConnectionInfo
from wsplugin.types import Frame

logger = logging.getLogger("wsplugin.redis")

_FAILURES = (RedisError, OSError, TimeoutError)


def _client(url: str, *, max_connections: int, timeout: float) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,  # waiting for a free pooled connection
        socket_connect_timeout=timeout,
        socket_timeout=timeout * 2,
        retry=Retry(NoBackoff(), 0),  # fail fast: the supervisor decides when to retry
        health_check_interval=0,
    )
    return Redis(connection_pool=pool)


class RedisBroker(Broker):
    scheme = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wsplugin",
        registry_ttl: float = 15.0,
        ping_interval: float = 1.0,
        deaf_after: float = 5.0,
        command_timeout: float = 2.0,
        publish_timeout: float = 1.0,
        reconnect_max_delay: float = 3.0,
        max_connections: int = 32,
    ) -> None:
        self.url = url
        self.node = Node()
        self.keys = keys = Keys(prefix)
        self.client = _client(url, max_connections=max_connections, timeout=publish_timeout)
        self.sub_client = _client(url, max_connections=2, timeout=publish_timeout * 2)
        self.publisher = publisher = Publisher(self.client, timeout=publish_timeout)
        self.listener = listener = Listener(
            self.sub_client,
            self._on_message,
            self._on_connected,
            backoff=Backoff(0.1, reconnect_max_delay),
            on_subscribed=self._on_subscribed,
        )
        self.relay = EventRelay(self.node, keys.events, publisher.publish)
        history = RedisHistory(publisher, self.client, keys, self.node)
        presence = RedisPresence(publisher, self.client, keys, self.node, registry_ttl)
        self.rooms = RoomChannels(self.node, keys, publisher, listener, history, presence)
        registry = Registry(self.client, keys, self.node, registry_ttl)
        self.cluster = Cluster(
            self.node, registry, listener, self.stats,
            heartbeat_interval=max(0.5, min(registry_ttl / 3, 5.0)),
            write_timeout=publish_timeout,
        )  # fmt: skip
        self.supervisor = Supervisor(
            self.node, keys, listener, publisher.publish, self._announce,
            ping_interval=ping_interval, deaf_after=deaf_after,
        )  # fmt: skip
        self.controller = Controller(
            self.node, keys, publisher.publish, registry.owner, registry.other_node_ids,
            self.supervisor.on_pong, timeout=command_timeout,
        )  # fmt: skip
        self.bad_messages = 0  # payloads no part could read
        self._running = False

    @property
    def node_id(self) -> str:
        return self.node.id

    @node_id.setter
    def node_id(self, node_id: str) -> None:
        self.node.renew(node_id)

    # lifecycle ---------------------------------------------------------------------------

    def attach_events(self, bus: EventBus) -> None:
        self.relay.attach(bus)

    async def start(self, handler: BrokerHandler) -> None:
        if self.node.forked:  # built before a fork (gunicorn --preload): a new node
            inherited = self.node.id
            self.node.renew()
            logger.warning(
                "broker %s was created in another process; this one is %s",
                inherited, self.node.id,
            )  # fmt: skip
        self._running = True
        self.publisher.start()
        rooms = self.rooms.start(handler)
        self.controller.start(handler)
        self.cluster.start(handler)
        self.listener.wanted.clear()  # a restarted node wants only what it has now
        self.listener.wanted.update([self.controller.channel, self.keys.events, *rooms])
        self.listener.start()
        if not await self.listener.wait_ready(3.0):
            logger.error("redis at %s unreachable; starting degraded and retrying", _safe(self.url))
        self.cluster.start_heartbeat()
        self.supervisor.start()
        self.relay.start()

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self.relay.stop()
        await asyncio.gather(self.cluster.stop(), self.supervisor.stop(), self.rooms.stop())
        await self.listener.stop()
        await self.controller.stop()
        await self.cluster.remove_node()
        await self.publisher.stop()
        for client in (self.client, self.sub_client):
            with contextlib.suppress(*_FAILURES):
                await client.aclose(close_connection_pool=True)

    # messages ----------------------------------------------------------------------------

    async def publish(self, room: str, frame: Frame, exclude: frozenset[str]) -> None:
        await self.rooms.publish(room, frame, exclude)

    def publish_nowait(
        self,
        room: str,
        frame: Frame,
        exclude: frozenset[str],
        on_error: Callable[[BaseException], None],
    ) -> bool:
        self.rooms.publish_nowait(room, frame, exclude, on_error)
        return True

    async def subscribe(self, room: str) -> None:
        await self.rooms.subscribe(room)

    async def unsubscribe(self, room: str) -> None:
        await self.rooms.unsubscribe(room)

    def history_store(self) -> HistoryStore:
        return self.rooms.history

    def presence_store(self) -> PresenceStore:
        return self.rooms.presence

    def _on_message(self, channel: str, data: bytes) -> None:
        """Every pub/sub message, to the part that owns its channel."""
        try:
            room = self.keys.room_of(channel)
            if room is not None:
                self.rooms.on_message(room, data)
            elif channel == self.controller.channel:
                self.controller.on_message(data)
            elif channel == self.keys.events:
                self.relay.on_remote(wire.unpack(data))
        except Exception:
            self.bad_messages += 1
            logger.exception("cannot handle a message on %s", channel)

    def _on_subscribed(self, channel: str) -> None:
        self.rooms.on_subscribed(channel)

    async def _on_connected(self, connects: int) -> None:
        self.cluster.heartbeat_soon()  # (re-)register the node and every local connection
        self.supervisor.on_connected(connects)

    # local connections and commands ------------------------------------------------------

    def connection_opened(self, conn: LocalConnection) -> None:
        self.cluster.register_soon(conn.info())

    async def rooms_changed(self, conn: LocalConnection) -> None:
        await self.rooms.sync()
        self.cluster.register_soon(conn.info())

    def connection_closed(self, conn: LocalConnection, rooms: Sequence[str]) -> None:
        self.cluster.unregister_soon(conn.id)
        if rooms:
            self.rooms.sync_soon()

    async def command(self, command: Command) -> bool:
        return await self.controller.command(command)

    async def command_all(self, command: Command) -> int:
        return await self.controller.command_all(command)

    async def claim_user_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        return await self.cluster.claim_user(user_id, connection_id, limit)

    def release_user_slot(self, connection_id: str) -> None:
        self.cluster.unregister_soon(connection_id)

    # registry ----------------------------------------------------------------------------

    async def register(self, info: ConnectionInfo) -> None:
        await self.cluster.register(info)

    async def unregister(self, connection_id: str) -> None:
        await self.cluster.unregister(connection_id)

    async def remote_connections(self, room: str | None = None) -> list[ConnectionInfo]:
        return await self.cluster.remote_connections(room)

    async def remote_rooms(self) -> Mapping[str, int]:
        return await self.cluster.remote_rooms()

    async def nodes(self) -> list[dict[str, Any]]:
        return await self.cluster.nodes()

    # health and counters -----------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return self.supervisor.health()

    def _announce(self, status: str) -> None:
        if self.relay.bus is not None:
            self.relay.bus.emit("health", detail=status)

    def stats(self) -> dict[str, int]:
        """The broker's own counters (published, own echoes, reconnects, deaf repairs...)."""
        return {
            "received": self.rooms.received,
            "delivered": self.rooms.delivered,
            "own_echoes": self.rooms.own_echoes,
            "bad_messages": self.bad_messages,
            "reconnects": self.supervisor.reconnects,
            "deaf_repairs": self.supervisor.deaf_repairs,
            "published": self.publisher.published,
            "publish_errors": self.publisher.errors,
            "command_timeouts": self.controller.rpc.timeouts,
            "events_relayed": self.relay.sent,
            "events_dropped": self.relay.dropped,
            "subscribed_channels": len(self.listener.wanted),
            "resubscribed_channels": self.listener.resubscribed,
        }


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
