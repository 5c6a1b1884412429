"""This node's part of the cluster registry, and the registry's view of the other nodes.

Each local connection is written when it opens or changes rooms and deleted when it
closes, in the background; a write is skipped at once while Redis is away. The heartbeat
(every ``heartbeat_interval``, and after each reconnection) rewrites the node's entries
from the handler's local truth, refreshing their TTL (see :mod:`.registry` for the keys).
Reads of the other nodes fail soft: an empty view and a warning.

The node's claims on user slots (``max_connections_per_user``) live here too: claimed by a
handshake (atomically, see :mod:`.registry`), refreshed by every heartbeat, removed when
the connection closes. While Redis is away a claim is granted on the node's own count and
written by the heartbeat after the reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from wsplugin.backends.base import BrokerHandler
from wsplugin.backends.redis.listener import Listener
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.registry import Registry
from wsplugin.backends.redis.tasks import Tasks, quietly
from wsplugin.info import ConnectionInfo

logger = logging.getLogger("wsplugin.redis")

_FAILURES = (RedisError, OSError, TimeoutError)

Stats = Callable[[], Mapping[str, int]]


class Cluster:
    def __init__(
        self,
        node: Node,
        registry: Registry,
        listener: Listener,
        stats: Stats,
        *,
        heartbeat_interval: float,
        write_timeout: float,
    ) -> None:
        self.node = node
        self.registry = registry
        self.listener = listener  # writes are skipped while it is not connected
        self.stats = stats  # the broker's counters, published with each heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.write_timeout = write_timeout
        self.tasks = Tasks()
        self._handler: BrokerHandler | None = None
        self._local: dict[str, tuple[str, ...]] = {}  # connection id -> rooms as registered
        self.claims: dict[str, str] = {}  # connection id -> user id: this node's user slots
        self._lock = asyncio.Lock()
        self._ok = True  # the last write succeeded (a failure is logged once)

    def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    def start_heartbeat(self) -> None:
        self.tasks.spawn(self._heartbeat_loop())

    async def stop(self) -> None:
        await self.tasks.stop()

    async def remove_node(self) -> None:
        """Clean shutdown: this node's entries go at once instead of expiring."""
        with contextlib.suppress(*_FAILURES):
            async with asyncio.timeout(1.0):
                await self.registry.remove_node(self.claims)

    # this node's connections ---------------------------------------------------------------

    def register_soon(self, info: ConnectionInfo) -> None:
        self.tasks.spawn(quietly(self.register(info)))

    def unregister_soon(self, connection_id: str) -> None:
        self.tasks.spawn(quietly(self.unregister(connection_id)))

    async def claim_user(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Claim one of ``user_id``'s ``limit`` slots in the cluster for ``connection_id``.

        Redis away (or failing): granted, since the node's own count already held; the
        heartbeat after the reconnection writes it.
        """
        if self.listener.connected:
            try:
                async with asyncio.timeout(self.write_timeout):
                    if not await self.registry.claim_user(user_id, connection_id, limit):
                        return False
                self._ok = True
            except _FAILURES as exc:
                self._note_failure(exc)
        self.claims[connection_id] = user_id
        return True

    async def register(self, info: ConnectionInfo) -> None:
        old = set(self._local.get(info.id, ()))
        self._local[info.id] = info.rooms
        added = [r for r in info.rooms if r not in old]
        removed = [r for r in old if r not in info.rooms]
        await self._write(lambda: self.registry.put(info, added, removed))

    async def unregister(self, connection_id: str) -> None:
        """Forget a closed connection, or a claim whose handshake failed."""
        rooms = self._local.pop(connection_id, ())
        user_id = self.claims.get(connection_id)
        await self._write(lambda: self.registry.delete(connection_id, rooms, user_id))
        # Written, or failed and left to expire. Cancelled before (the node stops): still a
        # claim of this node, which leave() removes.
        self.claims.pop(connection_id, None)

    async def _write(self, write: Callable[[], Awaitable[None]]) -> None:
        """One registry write, skipped at once while Redis is away (the reconnect rewrites all)."""
        if not self.listener.connected:
            return
        try:
            async with self._lock, asyncio.timeout(self.write_timeout):
                await write()
            self._ok = True
        except _FAILURES as exc:
            self._note_failure(exc)

    def _note_failure(self, exc: BaseException) -> None:
        if self._ok:
            logger.warning("redis registry write failed (%r); the next heartbeat rewrites it", exc)
        self._ok = False

    # heartbeat -----------------------------------------------------------------------------

    def heartbeat_soon(self) -> None:
        self.tasks.spawn(self.heartbeat())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Rewrite this node's registry entries from the local truth, refreshing their TTL."""
        if self._handler is None:
            return
        try:
            async with self._lock, asyncio.timeout(max(2.0, self.heartbeat_interval)):
                infos = self._handler.local_connections()
                self._local = {info.id: info.rooms for info in infos}
                await self.registry.write_snapshot(infos, self._meta(len(infos)), self.claims)
                await self.registry.live_nodes()  # prunes dead node ids
            self._ok = True
        except _FAILURES as exc:
            self._note_failure(exc)

    def _meta(self, connections: int) -> dict[str, str]:
        return {
            "id": self.node.id,
            "host": self.node.host,
            "pid": str(self.node.pid),
            "started": repr(self.node.started),
            "last_heartbeat": repr(time.time()),
            "connections": str(connections),
            "stats": json.dumps(self._handler.local_stats() if self._handler else {}),
            "broker": json.dumps(self.stats()),
        }

    # the other nodes -----------------------------------------------------------------------

    async def remote_connections(self, room: str | None = None) -> list[ConnectionInfo]:
        try:
            async with asyncio.timeout(2.0):
                infos = await self.registry.connections(await self.registry.other_node_ids())
        except _FAILURES as exc:
            logger.warning("cannot read the cluster registry: %r", exc)
            return []
        return [i for i in infos if room is None or room in i.rooms]

    async def remote_rooms(self) -> Mapping[str, int]:
        try:
            async with asyncio.timeout(2.0):
                return await self.registry.rooms(await self.registry.other_node_ids())
        except _FAILURES as exc:
            logger.warning("cannot read the cluster registry: %r", exc)
            return {}

    async def nodes(self) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(2.0):
                nodes = await self.registry.live_nodes()
        except _FAILURES as exc:
            logger.warning("cannot read the cluster registry: %r", exc)
            return []
        return [node for node in nodes if node["id"] != self.node.id]
