"""The live feed: listens to the manager's events and turns them into batched deltas.

The event callback only appends to a bounded deque and sets dirty flags: it never blocks
delivery. One sampler task per mount (running only while a dashboard is open) wakes every
``interval`` seconds, reads the counters, computes rates, and hands one small delta to every
open stream. A stream whose queue is full is marked stale and gets a fresh snapshot instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from admin_ui.audit import AuditLog
from admin_ui.event_log import EventLog
from admin_ui.manager import ManagerLike, cluster_nodes
from admin_ui.rates import RateMeter
from wsplugin.events import Event, EventKind

logger = logging.getLogger("wsplugin.admin")

Delta = dict[str, Any]
STRUCTURAL: frozenset[EventKind] = frozenset(
    {"connected", "disconnected", "joined", "left", "kicked", "slow_close"}
)
"""The kinds after which the connections and rooms tables change."""
RATE_KEYS = ("messages_in", "messages_out", "bytes_out")


def event_dict(seq: int, event: Event) -> dict[str, Any]:
    return {
        "seq": seq,
        "time": event.time,
        "kind": event.kind,
        "connection_id": event.connection_id,
        "room": event.room,
        "identity": event.identity,
        "detail": event.detail,
        "node": event.node,
    }


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[Delta] = field(default_factory=lambda: asyncio.Queue(maxsize=16))
    stale: bool = False


class Feed:
    def __init__(
        self,
        manager: ManagerLike,
        audit: AuditLog,
        *,
        interval: float = 0.5,
        log_size: int = 500,
        batch_events: int = 50,
    ) -> None:
        self.manager = manager
        self.audit = audit
        self.interval = interval
        self.batch_events = batch_events
        self.log = EventLog(per_kind=log_size)
        """The newest ``log_size`` events of each kind."""
        self.seq = 0
        self.totals: dict[str, int] = {}
        self.rates: dict[str, float] = {}
        self.room_rates: dict[str, float] = {}
        self.nodes: list[Any] = []
        self._totals_meter = RateMeter()
        self._rooms_meter = RateMeter()
        self._dirty_connections = False
        self._dirty_rooms = False
        self._dirty_health = False
        self._sent_seq = 0
        self._sent_audit = 0
        self._ticks = 0
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._listen()

    # -- the event callback: cheap and synchronous --------------------------------------

    def _on_event(self, event: Event) -> None:
        self.seq += 1
        self.log.append(self.seq, event)
        if event.kind in STRUCTURAL:
            self._dirty_connections = self._dirty_rooms = True
        elif event.kind == "dropped":
            self._dirty_connections = True
        elif event.kind == "health":
            self._dirty_health = True

    def events_newest(self, limit: int, after: int = 0,
                      kinds: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` events with ``seq > after`` (only ``kinds``), newest first."""
        return [event_dict(seq, event) for seq, event in self.log.newest(limit, after, kinds)]

    # -- subscribers ---------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        self._ensure_sampler()
        return subscriber

    def unsubscribe_stream(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    def _ensure_sampler(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._sent_seq = self.seq
        self._sent_audit = self.audit.seq
        self._task = loop.create_task(self._run(), name="wsplugin-admin-sampler")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                delta = await self.sample()
            except Exception:
                logger.exception("admin sampler failed")
                continue
            if delta:
                self._publish(delta)

    def _publish(self, delta: Delta) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber.queue.put_nowait(delta)
            except asyncio.QueueFull:
                subscriber.stale = True

    # -- the lifespan: listening from creation (or the app's start) to the app's end ------

    def _listen(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.manager.events.subscribe(self._on_event)

    @property
    def listening(self) -> bool:
        return self._unsubscribe is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan step (see ``mount_admin``): stopped when the app stops."""
        self._listen()  # again, if an earlier lifespan of the same app stopped it
        try:
            yield
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop listening to the manager's events and stop the sampler."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task

    # -- sampling ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the counters and update the rates (the sampler does it every tick)."""
        now = time.monotonic()
        self.totals = dict(await self.manager.stats())
        self.rates = self._totals_meter.update({k: self.totals.get(k, 0) for k in RATE_KEYS}, now)
        counts = getattr(self.manager, "room_messages", None)  # flat: cheaper with many rooms
        messages = counts() if counts is not None else _room_messages(self.manager.room_stats())
        self.room_rates = self._rooms_meter.update(messages, now)

    async def sample(self) -> Delta:
        """One tick: what changed since the last one (empty if nothing did)."""
        before = (self.totals, self.rates)
        await self.refresh()
        delta: Delta = {}
        if (self.totals, self.rates) != before:
            delta["totals"] = self.totals
            delta["rates"] = self.rates
        self._add_events(delta)
        self._add_audit(delta)
        await self._add_structure(delta)
        self._ticks += 1
        if self._ticks % 10 == 0:
            await self._add_nodes(delta)
        return delta

    def _add_events(self, delta: Delta) -> None:
        fresh = self.seq - self._sent_seq
        if fresh <= 0:
            return
        picked = self.log.newest_each(self.batch_events, self._sent_seq)  # per kind
        delta["events"] = [event_dict(seq, event) for seq, event in picked]
        delta["events_skipped"] = max(0, fresh - len(picked))
        self._sent_seq = self.seq

    def _add_audit(self, delta: Delta) -> None:
        if self.audit.seq <= self._sent_audit:
            return
        entries = self.audit.since(self._sent_audit, self.batch_events)
        delta["audit"] = [entry.to_dict() for entry in entries]
        self._sent_audit = self.audit.seq

    async def _add_structure(self, delta: Delta) -> None:
        if self._dirty_connections:
            delta["connections"] = {"changed": True, "count": self.totals.get("connections")}
            self._dirty_connections = False
        if self._dirty_rooms or any(self.room_rates.values()):
            delta["rooms"] = {"changed": True, "count": self.totals.get("rooms")}
            self._dirty_rooms = False
        if self._dirty_health:
            delta["health"] = dict(await self.manager.health())
            self._dirty_health = False

    async def _add_nodes(self, delta: Delta) -> None:
        nodes = await cluster_nodes(self.manager)
        if nodes != self.nodes:
            self.nodes = nodes
            delta["nodes"] = nodes


def _room_messages(rooms: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    return {name: int(stats.get("messages", 0)) for name, stats in rooms.items()}
