"""Is this node still hearing Redis? The self-ping, deaf detection, status and health.

Every ``ping_interval`` the node publishes a self-ping on its own control channel. If
Redis says nobody is subscribed to it, or no self-ping has come back for ``deaf_after``
seconds while the listener believes it is connected, the node is **deaf** (its
subscription was dropped silently): it logs an error, counts a repair and has the
listener reconnect. The status (``ok``/``degraded``) is announced whenever it changes.

Fifteen attributes, for a reason: seven collaborators and settings (node, keys, listener,
publish, announce, the two intervals), its tasks, two counters (reconnects, repairs) and
the five facts the liveness check reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wsplugin.backends.base import BrokerError
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.listener import Listener
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.tasks import Tasks

logger = logging.getLogger("wsplugin.redis")

Publish = Callable[[str, bytes], Awaitable[int]]
Announce = Callable[[str], None]
"""Told the new status (``ok``/``degraded``) when it changes."""


class Supervisor:
    def __init__(
        self,
        node: Node,
        keys: Keys,
        listener: Listener,
        publish: Publish,
        announce: Announce,
        *,
        ping_interval: float = 1.0,
        deaf_after: float = 5.0,
    ) -> None:
        self.node = node
        self.keys = keys
        self.listener = listener
        self.publish = publish
        self.announce = announce
        self.ping_interval = ping_interval
        self.deaf_after = deaf_after
        self.reconnects = 0
        self.deaf_repairs = 0
        self.tasks = Tasks()
        self._last_pong = 0.0  # monotonic time the last self-ping came back
        self._connected_at = 0.0
        self._last_repair = 0.0
        self._deaf = False
        self._status = "degraded"

    def start(self) -> None:
        self.tasks.spawn(self._ping_loop())

    async def stop(self) -> None:
        await self.tasks.stop()

    def on_connected(self, connects: int) -> None:
        """The listener (re)connected and resubscribed: ping at once."""
        self._connected_at = time.monotonic()
        if connects > 1:
            self.reconnects += 1
        self.tasks.spawn(self.ping())

    def on_pong(self) -> None:
        self._last_pong = time.monotonic()
        if self._deaf:
            logger.warning("redis pub/sub delivers again on node %s", self.node.id)
        self._deaf = False

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            await self.ping()
            self._check_deaf()
            self._emit_status()

    async def ping(self) -> None:
        if not self.listener.connected:
            return
        try:
            receivers = await self.publish(
                self.keys.control(self.node.id), wire.encode_ping(repr(time.time()))
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
        logger.error("node %s is deaf (%s); reconnecting its subscription", self.node.id, why)
        self._deaf = True
        self._last_repair = time.monotonic()
        self.deaf_repairs += 1
        self.listener.repair()

    def _emit_status(self) -> None:
        status = self._current_status()
        if status != self._status:
            self._status = status
            self.announce(status)

    def _current_status(self) -> str:
        healthy = self.listener.connected and not self._deaf
        return "ok" if healthy and self._ping_age() <= self.deaf_after else "degraded"

    def _ping_age(self) -> float:
        if not self._last_pong:
            return time.monotonic() - self._connected_at if self._connected_at else float("inf")
        return time.monotonic() - self._last_pong

    def health(self) -> dict[str, Any]:
        age = self._ping_age()
        return {
            "status": self._current_status(),
            "backend": "redis",
            "node": self.node.id,
            "subscribed": self.listener.connected,
            "deaf": self._deaf,
            "last_self_ping_age": round(age, 3) if age != float("inf") else None,
            "reconnects": self.reconnects,
            "deaf_repairs": self.deaf_repairs,
            "last_error": self.listener.last_error,
            "rooms_subscribed": sum(
                1 for c in self.listener.wanted if self.keys.room_of(c) is not None
            ),
        }
