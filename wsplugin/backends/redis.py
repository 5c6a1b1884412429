"""The Redis broker: many worker processes and machines behave as one server.

Per process: one pub/sub connection (supervised by :class:`Listener`) subscribed to the
room channels that have local members, the all-rooms channel, this node's control
channel and the cluster events channel; a small pool for PUBLISH (pipelined, failing fast)
and the registry. A periodic self-ping on the control channel proves the subscription
still delivers; a node that stops hearing itself reports ``degraded`` and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wsplugin.backends import _redis_wire as wire
from wsplugin.backends._history import HistoryStore
from wsplugin.backends._redis_events import EventRelay
from wsplugin.backends._redis_history import RedisHistory
from wsplugin.backends._redis_keys import Keys
from wsplugin.backends._redis_listener import Backoff, Listener
from wsplugin.backends._redis_publisher import Publisher
from wsplugin.backends._redis_registry import Registry
from wsplugin.backends._redis_rpc import Rpc
from wsplugin.backends.base import (
    ALL_ROOMS,
    Broker,
    BrokerError,
    BrokerHandler,
    Command,
    LocalConnection,
)
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
        self.node_id = uuid.uuid4().hex[:12]
        self._node_bytes = self.node_id.encode()
        self.keys = Keys(prefix)
        self.registry_ttl = registry_ttl
        self.heartbeat_interval = max(0.5, min(registry_ttl / 3, 5.0))
        self.ping_interval = ping_interval
        self.deaf_after = deaf_after
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        self.client = _client(url, max_connections=max_connections, timeout=publish_timeout)
        self.sub_client = _client(url, max_connections=2, timeout=publish_timeout * 2)
        self.registry = Registry(self.client, self.keys, self.node_id, registry_ttl)
        self.publisher = Publisher(self.client, timeout=publish_timeout)
        self.listener = Listener(
            self.sub_client,
            self._on_message,
            self._on_connected,
            backoff=Backoff(0.1, reconnect_max_delay),
            on_subscribed=self._on_subscribed,
        )
        self.rpc = Rpc(self.node_id, self.publisher.publish, self.keys.control, command_timeout)
        self.relay = EventRelay(self.node_id, self.keys.events, self.publisher.publish)
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "delivered", "own_echoes", "bad_messages", "reconnects", "deaf_repairs"), 0
        )
        self._control = self.keys.control(self.node_id)
        self.history = RedisHistory(self)  # history rooms (issue 11)
        self._handler: BrokerHandler | None = None
        self._local: dict[str, tuple[str, ...]] = {}  # connection id -> rooms as registered
        self._registry_lock = asyncio.Lock()
        self._rooms: set[str] = set()  # rooms subscribed for their local members
        self._rooms_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._last_pong = 0.0  # monotonic time the last self-ping came back
        self._connected_at = 0.0
        self._last_repair = 0.0
        self._deaf = False
        self._status = "degraded"
        self._registry_ok = True
        self._running = False

    # lifecycle ---------------------------------------------------------------------------

    def attach_events(self, bus: EventBus) -> None:
        self.relay.attach(bus)

    async def start(self, handler: BrokerHandler) -> None:
        if os.getpid() != self.pid:  # built before a fork (gunicorn --preload): a new node
            self._rename(uuid.uuid4().hex[:12])
        self._handler = handler
        self._running = True
        self.publisher.start()
        self._rooms = set(handler.local_rooms())
        channels = [self._control, self.keys.events, self.keys.room(ALL_ROOMS)]
        self.listener.wanted.clear()  # a restarted node wants only what it has now
        self.listener.wanted.update(channels + [self.keys.room(r) for r in self._rooms])
        self.listener.start()
        if not await self.listener.wait_ready(3.0):
            logger.error("redis at %s unreachable; starting degraded and retrying", _safe(self.url))
        self._loops = [self._spawn(self._heartbeat_loop()), self._spawn(self._ping_loop()),
                       self._spawn(self.history.keep_loop())]
        self.relay.start()

    def _rename(self, node: str) -> None:
        logger.warning(
            "broker %s was created in another process; this one is %s", self.node_id, node
        )
        self.node_id = self.registry.node = self.rpc.node = self.relay.node = node
        self._node_bytes = node.encode()
        self._control = self.keys.control(node)
        self.pid = os.getpid()
        self.started = time.time()
        if self.relay.bus is not None:
            self.relay.bus.node = node

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self.relay.stop()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        await self.listener.stop()
        await self.rpc.stop()
        with contextlib.suppress(*_FAILURES):
            async with asyncio.timeout(1.0):
                await self.registry.remove_node()
        await self.publisher.stop()
        for client in (self.client, self.sub_client):
            with contextlib.suppress(*_FAILURES):
                await client.aclose(close_connection_pool=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # messages ----------------------------------------------------------------------------

    async def publish(self, room: str, frame: Frame, exclude: frozenset[str]) -> None:
        await self.publisher.publish(
            self.keys.room(room), wire.encode_room_message(self.node_id, frame, exclude)
        )

    def publish_nowait(
        self,
        room: str,
        frame: Frame,
        exclude: frozenset[str],
        on_error: Callable[[BaseException], None],
    ) -> bool:
        self.publisher.publish_nowait(
            self.keys.room(room), wire.encode_room_message(self.node_id, frame, exclude), on_error
        )
        return True

    async def subscribe(self, room: str) -> None:
        await self.listener.add([self.keys.room(room)])

    async def unsubscribe(self, room: str) -> None:
        if room != ALL_ROOMS:
            await self.listener.discard([self.keys.room(room)])
            self.history.on_unsubscribed(room)

    def history_store(self) -> HistoryStore:
        return self.history

    def _on_subscribed(self, channel: str) -> None:
        room = self.keys.room_of(channel)
        if room is not None and room != ALL_ROOMS:
            self.history.on_subscribed(room)  # live (again): look for missed messages

    def _on_message(self, channel: str, data: bytes) -> None:
        try:
            room = self.keys.room_of(channel)
            if room is not None:
                self._on_room_message(room, data)
            elif channel == self._control:
                self._on_control(wire.unpack(data))
            elif channel == self.keys.events:
                self.relay.on_remote(wire.unpack(data))
        except Exception:
            self.counters["bad_messages"] += 1
            logger.exception("cannot handle a message on %s", channel)

    def _on_room_message(self, room: str, data: bytes) -> None:
        if wire.is_stream_message(data):  # a history room: in offset order, own echoes too
            self.counters["received"] += 1
            self.history.on_payload(room, data)
            return
        if wire.room_message_node(data) == self._node_bytes:
            self.counters["own_echoes"] += 1
            return
        message = wire.decode_room_message(data)
        self.counters["received"] += 1
        if self._handler is not None:
            self.counters["delivered"] += self._handler.deliver_remote(
                room, message.frame, message.exclude
            )

    def _on_control(self, fields: list[bytes]) -> None:
        kind = fields[0] if fields else b""
        if kind == b"P":
            self._on_pong()
        elif kind == b"Q" and self._handler is not None:
            self.rpc.on_request(fields, self._handler)
        elif kind == b"R":
            self.rpc.on_reply(fields)
        else:
            raise wire.WireError(f"unknown control message {kind!r}")

    # local connections -------------------------------------------------------------------

    def connection_opened(self, conn: LocalConnection) -> None:
        self._spawn(_quietly(self.register(conn.info())))

    async def rooms_changed(self, conn: LocalConnection) -> None:
        await self._sync_rooms()
        self._spawn(_quietly(self.register(conn.info())))

    def connection_closed(self, conn: LocalConnection, rooms: Sequence[str]) -> None:
        self._spawn(_quietly(self.unregister(conn.id)))
        if rooms:
            self._spawn(self._sync_rooms())

    async def _sync_rooms(self) -> None:
        """Subscribe the rooms that gained local members, unsubscribe those left empty."""
        async with self._rooms_lock:
            wanted = set(self._handler.local_rooms()) if self._handler is not None else set()
            for room in sorted(wanted - self._rooms):
                await _quietly(self.subscribe(room))
                self._rooms.add(room)
            for room in sorted(self._rooms - wanted):
                await _quietly(self.unsubscribe(room))
                self._rooms.discard(room)

    # commands ----------------------------------------------------------------------------

    async def command(self, command: Command) -> bool:
        try:
            async with asyncio.timeout(self.rpc.timeout):
                owner = await self.registry.owner(command.connection_id)
        except _FAILURES as exc:
            logger.warning("registry lookup for %s failed: %r", command.connection_id, exc)
            return False
        if owner is None or owner == self.node_id:
            return False
        return await self.rpc.call(owner, command)

    # registry ----------------------------------------------------------------------------

    async def register(self, info: ConnectionInfo) -> None:
        old = set(self._local.get(info.id, ()))
        self._local[info.id] = info.rooms
        added = [r for r in info.rooms if r not in old]
        removed = [r for r in old if r not in info.rooms]
        await self._write(lambda: self.registry.put(info, added, removed))

    async def unregister(self, connection_id: str) -> None:
        rooms = self._local.pop(connection_id, ())
        await self._write(lambda: self.registry.delete(connection_id, rooms))

    async def _write(self, write: Callable[[], Awaitable[None]]) -> None:
        """One registry write, skipped at once while Redis is away (the reconnect rewrites all)."""
        if not self.listener.connected:
            return
        try:
            async with self._registry_lock, asyncio.timeout(self.publisher.timeout):
                await write()
            self._registry_ok = True
        except _FAILURES as exc:
            self._note_registry_failure(exc)

    def _note_registry_failure(self, exc: BaseException) -> None:
        if self._registry_ok:
            logger.warning("redis registry write failed (%r); the next heartbeat rewrites it", exc)
        self._registry_ok = False

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Rewrite this node's registry entries from the local truth, refreshing their TTL."""
        if self._handler is None:
            return
        try:
            async with self._registry_lock, asyncio.timeout(max(2.0, self.heartbeat_interval)):
                infos = self._handler.local_connections()
                self._local = {info.id: info.rooms for info in infos}
                await self.registry.write_snapshot(infos, self._meta(len(infos)))
                await self.registry.live_nodes()  # prunes dead node ids
            self._registry_ok = True
        except _FAILURES as exc:
            self._note_registry_failure(exc)

    def _meta(self, connections: int) -> dict[str, str]:
        return {
            "id": self.node_id,
            "host": self.host,
            "pid": str(self.pid),
            "started": repr(self.started),
            "last_heartbeat": repr(time.time()),
            "connections": str(connections),
            "stats": json.dumps(self._handler.local_stats() if self._handler else {}),
            "broker": json.dumps(self.stats()),
        }

    def stats(self) -> dict[str, int]:
        """The broker's own counters (published, own echoes, reconnects, deaf repairs...)."""
        return {
            **self.counters,
            "published": self.publisher.published,
            "publish_errors": self.publisher.errors,
            "command_timeouts": self.rpc.timeouts,
            "events_relayed": self.relay.sent,
            "events_dropped": self.relay.dropped,
            "subscribed_channels": len(self.listener.wanted),
            "resubscribed_channels": self.listener.resubscribed,
        }

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
        return [node for node in nodes if node["id"] != self.node_id]

    # supervision -------------------------------------------------------------------------

    async def _on_connected(self, connects: int) -> None:
        self._connected_at = time.monotonic()
        if connects > 1:
            self.counters["reconnects"] += 1
        self._spawn(self._heartbeat())  # (re-)register the node and every local connection
        self._spawn(self._ping())

    def _on_pong(self) -> None:
        self._last_pong = time.monotonic()
        if self._deaf:
            logger.warning("redis pub/sub delivers again on node %s", self.node_id)
        self._deaf = False

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            await self._ping()
            self._check_deaf()
            self._emit_status()

    async def _ping(self) -> None:
        if not self.listener.connected:
            return
        try:
            receivers = await self.publisher.publish(
                self._control, wire.encode_ping(repr(time.time()))
            )
        except BrokerError:
            return  # Redis itself is away: the listener notices and reconnects
        grace = time.monotonic() - self._connected_at > self.ping_interval
        if receivers == 0 and grace and self.listener.connected:
            self._declare_deaf("this node is not subscribed to its own control channel")

    def _check_deaf(self) -> None:
        now = time.monotonic()
        silent = now - max(self._last_pong, self._connected_at)
        if (
            self.listener.connected
            and silent > self.deaf_after
            and now - self._last_repair > self.deaf_after
        ):
            self._declare_deaf(f"no self-ping came back for {silent:.1f}s")

    def _declare_deaf(self, why: str) -> None:
        logger.error("node %s is deaf (%s); reconnecting its subscription", self.node_id, why)
        self._deaf = True
        self._last_repair = time.monotonic()
        self.counters["deaf_repairs"] += 1
        self.listener.repair()

    def _emit_status(self) -> None:
        status = self._current_status()
        if status != self._status:
            self._status = status
            if self.relay.bus is not None:
                self.relay.bus.emit("health", detail=status)

    def _current_status(self) -> str:
        healthy = self.listener.connected and not self._deaf
        return "ok" if healthy and self._ping_age() <= self.deaf_after else "degraded"

    def _ping_age(self) -> float:
        if not self._last_pong:
            return time.monotonic() - self._connected_at if self._connected_at else float("inf")
        return time.monotonic() - self._last_pong

    async def health(self) -> dict[str, Any]:
        age = self._ping_age()
        return {
            "status": self._current_status(),
            "backend": "redis",
            "node": self.node_id,
            "subscribed": self.listener.connected,
            "deaf": self._deaf,
            "last_self_ping_age": round(age, 3) if age != float("inf") else None,
            "reconnects": self.counters["reconnects"],
            "deaf_repairs": self.counters["deaf_repairs"],
            "last_error": self.listener.last_error,
            "rooms_subscribed": sum(
                1 for c in self.listener.wanted if self.keys.room_of(c) is not None
            ),
        }


async def _quietly(call: Awaitable[None]) -> None:
    """Await a broker call; a failure is logged (the supervisor repairs, delivery goes on)."""
    try:
        await call
    except Exception as exc:
        logger.warning("wsplugin broker call failed: %r", exc)


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
