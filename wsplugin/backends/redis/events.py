"""Relaying lifecycle events between nodes, so one admin dashboard sees the whole cluster.

Local events are buffered (bounded) and published as one batch every ``interval`` on the
cluster events channel; batches from other nodes are re-emitted on the local bus with
:func:`wsplugin.events.relay`, keeping their node. Events that are not from this node
(already relayed ones) are never sent again, so nothing loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wsplugin.backends.base import BrokerError
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.node import Node
from wsplugin.events import EVENT_KINDS, Event, EventBus, relay

logger = logging.getLogger("wsplugin.redis")

Publish = Callable[[str, bytes], Awaitable[int]]


def event_row(event: Event, node: str) -> list[Any]:
    return [
        event.kind,
        event.connection_id,
        event.room,
        event.identity,
        event.detail,
        event.node or node,
        event.time,
    ]


def event_from_row(row: Any) -> Event | None:
    if not isinstance(row, list) or len(row) != 7 or row[0] not in EVENT_KINDS:
        return None
    kind, connection_id, room, identity, detail, node, at = row
    return Event(kind, connection_id, room, identity, str(detail), str(node), float(at))


class EventRelay:
    def __init__(
        self,
        node: Node,
        channel: str,
        publish: Publish,
        *,
        interval: float = 0.2,
        max_buffer: int = 5000,
    ) -> None:
        self.node = node
        self.channel = channel
        self.publish = publish
        self.interval = interval
        self.max_buffer = max_buffer
        self.bus: EventBus | None = None
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self._buffer: list[list[Any]] = []
        self._relaying = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, bus: EventBus) -> None:
        """Relay ``bus``'s events; it names them after this node from now on."""
        self.bus = bus
        bus.follow(self.node)
        self._unsubscribe = bus.subscribe(self._on_local)

    def start(self) -> None:
        if self.bus is not None:
            self._task = asyncio.create_task(self._run(), name="wsplugin-redis-events")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_local(self, event: Event) -> None:
        bus = self.bus
        if (
            self._relaying
            or bus is None
            or (event.node and event.node not in (bus.node, self.node.id))
        ):
            return  # an event relayed from another node: never send it back out
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            return
        self._buffer.append(event_row(event, self.node.id))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._buffer:
                await self.flush()

    async def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        payload = json.dumps(batch, separators=(",", ":"), default=str).encode()
        try:
            await self.publish(self.channel, wire.encode_events(self.node.id, payload))
            self.sent += len(batch)
        except BrokerError:
            self.dropped += len(batch)

    def on_remote(self, fields: list[bytes]) -> None:
        if len(fields) != 3 or fields[1].decode() == self.node.id or self.bus is None:
            return
        rows = json.loads(fields[2])
        self._relaying = True  # whatever node ids say, what we re-emit is not sent back out
        try:
            for row in rows if isinstance(rows, list) else ():
                event = event_from_row(row)
                if event is not None:
                    self.received += 1
                    relay(self.bus, event)
        finally:
            self._relaying = False
