"""History rooms on one node: offset order, gap repair, recovery of a joining client.

Every stored message of a history room reaches :meth:`Streams.on_stream_message` (from the
store: at once in memory, through the room's pub/sub channel with Redis, the publishing
node included). Per room, a :class:`Stream` delivers them to the local members in offset
order, exactly once: a duplicate is dropped, a message after a gap waits while the gap is
read from history; a gap that history cannot fill becomes a ``reset`` frame.

A connection that joins a history room is first a :class:`Joiner`: it is a hub member but
the hub skips it, and the stream buffers what it would have received. Its reply
(``welcome``/``joined``, with the position and, on a recovery, ``recovered``) goes out
first, then the recovered messages (read in pages, see :mod:`wsplugin.history.recovery`), then the
buffered ones after that position: no gap, no duplicate. Then it is an ordinary member
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from wsplugin.backends.base import BrokerError
from wsplugin.backends.history_store import Entry, HistoryStore, PublishDone
from wsplugin.history import (
    History,
    HistoryMessage,
    HistoryPage,
    NoHistory,
    Position,
    check_since,
)
from wsplugin.history.recovery import Recoveries
from wsplugin.node_parts import NodeParts
from wsplugin.protocol import encode_head, encode_json, reply, text_message
from wsplugin.types import ASGIMessage, Data

if TYPE_CHECKING:
    from wsplugin.delivery.connection import Connection


class StreamsOwner(NodeParts, Protocol):
    """What the history rooms use of the manager."""

    def change_room(self, conn: Connection, room: str, *, joining: bool) -> Awaitable[bool]:
        """The bookkeeping step of a join or leave (hub, event, broker subscription)."""

    def publish_failed(self, exc: BaseException) -> None:
        """Count (and log, throttled) a publish the broker refused."""

logger = logging.getLogger("wsplugin")

READY_TIMEOUT = 3.0
"""Seconds a join waits for the room's position before answering without one."""

FILL_BATCH = 1000
MAX_PENDING = 10_000
RETRY_DELAY = 1.0

_NONE: frozenset[str] = frozenset()


Held = tuple[str, int, ASGIMessage | None, int, frozenset[str]]
"""A buffered live message (or reset, without a message): epoch, offset, message, size,
excluded ids."""


class Joiner:
    """A member whose reply is not sent yet (or that still catches up with the stream).

    Its buffer is bounded like the connection's outbound queue (messages and bytes). When a
    long recovery lets it overflow, it is dropped and ``lost`` is set: the recovery then
    reads those messages from history instead (see :mod:`wsplugin.history.recovery`).
    """

    __slots__ = ("conn", "epoch", "held", "items", "lost", "sent", "waiting")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.waiting = True
        self.epoch: str | None = None
        self.sent = 0
        self.items: list[Held] = []
        self.held = 0  # bytes of the buffered messages
        self.lost = False

    def offer(self, epoch: str, offset: int, message: ASGIMessage, size: int,
              exclude: frozenset[str]) -> None:
        if self.waiting:
            self._hold((epoch, offset, message, size, exclude), size)
        elif epoch == self.epoch and offset > self.sent:
            self.sent = offset
            if self.conn.id not in exclude:
                self.conn.deliver(message, size)

    def offer_reset(self, epoch: str, offset: int, room: str) -> None:
        if self.waiting:
            self._hold((epoch, offset, None, 0, _NONE), 0)
        elif epoch != self.epoch or offset > self.sent:
            self.epoch, self.sent = epoch, offset
            self.conn.deliver_text(reset_frame(room, epoch, offset))

    def _hold(self, item: Held, size: int) -> None:
        if self.lost:
            return
        outbox = self.conn.outbox
        if len(self.items) >= outbox.max_messages or self.held + size > outbox.max_bytes:
            self._drop()
            self.lost = True  # history still has them
            return
        self.items.append(item)
        self.held += size

    def _drop(self) -> None:
        self.items = []
        self.held = 0

    def reply(self, head: dict[str, Any] | None, position: Position | None,
              recovered: bool | None) -> None:
        send_head(self.conn, head, position, recovered)

    def refuse(self, head: dict[str, Any] | None, stream: Stream) -> None:
        """``recovered: false`` with the room's position now, then live messages."""
        self.reply(head, stream.position(), False)
        self.start_at(stream)

    def reset_to(self, stream: Stream) -> None:
        """Continuity is lost: a ``reset`` with the room's position now, then live messages."""
        position = stream.position()
        if position is not None:
            self.conn.deliver_text(reset_frame(stream.room, position.epoch, position.offset))
        self.start_at(stream)

    def start_at(self, stream: Stream) -> None:
        """Go live from the room's position now: nothing buffered is needed."""
        self._drop()
        position = stream.position()
        self.start(None if position is None else position.epoch,
                   0 if position is None else position.offset, stream.room)

    def caught_up(self, stream: Stream) -> bool:
        return stream.room not in self.conn.rooms or (
            self.epoch is not None and self.epoch == stream.epoch and self.sent >= stream.last
        )

    def start(self, epoch: str | None, sent: int, room: str) -> None:
        """The reply went out at (``epoch``, ``sent``): send what was buffered after it."""
        self.waiting = False
        self.epoch, self.sent = epoch, sent
        items = self.items
        self._drop()
        for item_epoch, offset, message, size, exclude in items:
            if message is None:
                self.offer_reset(item_epoch, offset, room)
            else:
                self.offer(item_epoch, offset, message, size, exclude)


def reset_frame(room: str, epoch: str, offset: int) -> str:
    return reply("reset", room=room, epoch=epoch, offset=offset)


def send_head(conn: Connection, head: dict[str, Any] | None, position: Position | None,
              recovered: bool | None) -> None:
    """The ``welcome``/``joined`` of a history room: ``head`` with the position (nothing for a
    join without a reply: a user route's rooms)."""
    if head is None:
        return
    frame = dict(head)
    frame["epoch"] = "" if position is None else position.epoch
    frame["offset"] = 0 if position is None else position.offset
    if recovered is not None:
        frame["recovered"] = recovered
    conn.deliver_text(encode_json(frame))


class Stream:
    """One history room on this node: the last offset delivered, and what waits."""

    __slots__ = ("acks", "again", "busy", "epoch", "joiners", "last", "pending", "ready",
                 "room", "spec")

    def __init__(self, room: str, spec: History) -> None:
        self.room = room
        self.spec = spec
        self.epoch: str | None = None  # None until the position was read
        self.last = 0
        self.ready = asyncio.Event()
        self.pending: dict[int, tuple[str, str, frozenset[str]]] = {}
        self.joiners: dict[str, Joiner] = {}
        self.acks: dict[int, list[Callable[[], None]]] = {}
        self.busy = False
        self.again = False

    def position(self) -> Position | None:
        return None if self.epoch is None else Position(self.epoch, self.last)


class Streams:
    """The history rooms of one manager (node)."""

    def __init__(self, owner: StreamsOwner) -> None:
        self.owner = owner
        self.table = owner.room_table  # which rooms keep history: the one room table
        self.active = self.table.keeps_history
        self.recoveries = Recoveries(owner.settings, owner.tally.recoveries)
        self.streams: dict[str, Stream] = {}
        self.store: HistoryStore | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ("history_resets", "history_gaps_filled", "history_duplicates"), 0
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Cancel the syncs in flight (before the broker closes its connections)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start(self) -> None:
        if not self.active:
            return
        self.store = self.owner.broker.history_store()
        if self.store is None:
            raise RuntimeError(f"the {self.owner.broker.scheme}:// backend has no history; "
                               "remove the history setting or use memory:// or redis://")
        self.store.sink = self

    def spec(self, room: str) -> History | None:
        """The history of ``room`` (one cached dict lookup), None for a plain room."""
        return self.table.options(room).history if self.active else None

    def stats(self) -> dict[str, int]:
        if not self.active:
            return {}
        outcomes = self.recoveries.tally.outcomes
        return {**self.counters, "recoveries": outcomes["recovered"],
                "recoveries_failed": outcomes["not_recovered"],
                "recoveries_reset": outcomes["reset"]}

    def _store(self) -> HistoryStore:
        if self.store is None:
            raise BrokerError("history is not started (the manager is not running)")
        return self.store

    # ------------------------------------------------------------------ publishing
    async def publish(self, room: str, spec: History, data: Data,
                      exclude: frozenset[str] | None, sender: str | None, user: str | None,
                      on_done: PublishDone | None) -> int:
        """Store and send (the history part of ``WebSocketManager.publish``).

        Without ``on_done`` a failure is raised; with it, the store is not waited for and
        ``on_done`` hears the end, after this node delivered the message. Returns the local
        member count.
        """
        head = encode_head(room, data, sender, user)
        if on_done is None:
            try:
                await self._store().publish(room, head, exclude or _NONE, spec)
            except Exception as exc:
                self.owner.publish_failed(exc)
                raise
        else:
            self._publish_nowait(room, head, exclude or _NONE, spec, on_done)
        members = self.owner.hub.rooms.get(room)
        if members is None:
            return 0
        if not exclude:
            return len(members.members)
        return sum(1 for cid in members.members if cid not in exclude)

    def _publish_nowait(self, room: str, head: str, exclude: frozenset[str], spec: History,
                        on_done: PublishDone) -> None:
        def done(position: Position | None, error: BaseException | None) -> None:
            if error is not None or position is None:
                error = error or BrokerError("no position")
                self.owner.publish_failed(error)
                on_done(None, error)
            else:
                self._when_delivered(room, position, lambda: on_done(position, None))

        try:
            self._store().publish_nowait(room, head, exclude, spec, done)
        except Exception as exc:
            done(None, exc)

    def _when_delivered(self, room: str, position: Position, call: Callable[[], None]) -> None:
        """``call()`` once this node delivered the message at ``position`` (or gave it up)."""
        stream = self.streams.get(room)
        if stream is None or stream.epoch != position.epoch or stream.last >= position.offset:
            call()
        else:  # the echo is still on its way
            stream.acks.setdefault(position.offset, []).append(call)

    # ------------------------------------------------------------------ joining
    async def join(self, conn: Connection, room: str, spec: History,
                   head: dict[str, Any] | None, want: tuple[str, int] | None) -> bool:
        """Join ``room`` and send ``head`` (welcome/joined) with the position; recover ``want``.

        The history part of ``WebSocketManager.add_member``. Returns False if the connection
        already was a member (``head`` is sent all the same).
        """
        started = time.perf_counter()
        stream = self._stream(room, spec)
        if conn.id in stream.joiners or room in conn.rooms:
            send_head(conn, head, stream.position(), None if want is None else False)
            return False
        joiner = stream.joiners[conn.id] = Joiner(conn)
        try:
            await self.owner.change_room(conn, room, joining=True)
            position = await self._wait_ready(stream)
            if want is None:
                joiner.reply(head, position, None)
                joiner.start_at(stream)
            else:
                await self.recoveries.recover(self.store, stream, joiner, head, position,
                                              *want, started)
                if joiner.waiting:  # it closed or left the room during the recovery
                    joiner.start_at(stream)
        except BaseException:
            stream.joiners.pop(conn.id, None)  # an ordinary member, if a member at all
            self._forget_if_idle(stream)
            raise
        self._release(stream)
        self._forget_if_idle(stream)  # it closed or left meanwhile
        return True

    def _stream(self, room: str, spec: History) -> Stream:
        stream = self.streams.get(room)
        if stream is None:
            stream = self.streams[room] = Stream(room, spec)
            self._schedule_sync(stream)
        return stream

    async def _wait_ready(self, stream: Stream) -> Position | None:
        if not stream.ready.is_set():
            self._schedule_sync(stream)
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    await stream.ready.wait()
            except TimeoutError:
                return None
        return stream.position()

    def _release(self, stream: Stream) -> None:
        """Joiners that caught up become ordinary members; closed ones are forgotten."""
        for cid, joiner in list(stream.joiners.items()):
            if joiner.conn.closed or (not joiner.waiting and joiner.caught_up(stream)):
                del stream.joiners[cid]

    # ------------------------------------------------------------------ leaving
    def rooms_left(self, rooms: Iterable[str]) -> None:
        """A connection left ``rooms``: forget the streams nobody here is in or joining.

        A stream is the node's view of a room for its local members; without them it is
        forgotten at once (the store keeps the position), so rooms visited and left cost
        nothing here, however many.
        """
        if not self.streams:
            return
        for room in rooms:
            stream = self.streams.get(room)
            if stream is not None:
                self._forget_if_idle(stream)

    def _forget_if_idle(self, stream: Stream) -> None:
        self._release(stream)  # forget joiners that closed meanwhile
        room = stream.room
        if (stream.joiners or room in self.owner.hub.rooms
                or self.streams.get(room) is not stream):
            return
        del self.streams[room]
        self._send_acks(stream, None)

    # ------------------------------------------------------------------ asked by the store
    def tracked(self, room: str) -> Position | None:
        stream = self.streams.get(room)
        return None if stream is None else stream.position()

    def empty_positions(self) -> list[tuple[str, str]]:
        return [(s.room, s.epoch) for s in self.streams.values()
                if s.epoch and s.last == 0]

    # ------------------------------------------------------------------ history API
    async def history(self, room: str, since: int | None, limit: int) -> HistoryPage:
        spec = self.spec(room)
        if spec is None:
            raise NoHistory(f"room {room!r} keeps no history (see the history setting)")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be a non-negative integer")
        since = check_since(since)
        position, entries = await self._store().read(room, since, limit, spec)
        messages = tuple(HistoryMessage(offset, frame) for offset, frame, _ in entries)
        return HistoryPage(room, position, messages)

    # ------------------------------------------------------------------ from the store
    def on_stream_message(self, room: str, epoch: str, offset: int, frame: str,
                          exclude: frozenset[str]) -> None:
        stream = self.streams.get(room)
        if stream is None:
            spec = self.spec(room)
            if spec is None or room not in self.owner.hub.rooms:
                return
            stream = self.streams[room] = Stream(room, spec)  # members joined by other ways
            stream.epoch, stream.last = epoch, offset - 1
            stream.ready.set()
        store = self.store
        if (store is not None and store.synchronous and not stream.joiners
                and room not in self.owner.hub.rooms):
            del self.streams[room]  # nobody here: the store has the position anyway
            return
        if stream.epoch is None:
            self._park(stream, epoch, offset, frame, exclude)
            return
        if epoch != stream.epoch:
            self._reset(stream, epoch, offset - 1)
        if offset <= stream.last:
            self.counters["history_duplicates"] += 1
        elif offset == stream.last + 1:
            self._deliver(stream, offset, frame, exclude)
            self._drain(stream)
        else:
            self._park(stream, epoch, offset, frame, exclude)
            self._schedule_sync(stream)

    def on_stream_subscribed(self, room: str) -> None:
        """The node's subscription to ``room`` is (again) live: check for missed messages."""
        stream = self.streams.get(room)
        if stream is not None:
            self._schedule_sync(stream)

    def on_stream_unsubscribed(self, room: str) -> None:
        stream = self.streams.get(room)
        if stream is not None:
            self._forget_if_idle(stream)

    def _park(self, stream: Stream, epoch: str, offset: int, frame: str,
              exclude: frozenset[str]) -> None:
        if len(stream.pending) >= MAX_PENDING:
            stream.pending.clear()  # history has them; the sync reads them back
        stream.pending[offset] = (epoch, frame, exclude)

    def _deliver(self, stream: Stream, offset: int, frame: str, exclude: frozenset[str]) -> None:
        message, size = text_message(frame)
        joiners = stream.joiners
        skip = exclude.union(joiners) if joiners else exclude
        self.owner.hub.deliver(stream.room, message, size, skip or None)
        stream.last = offset
        if joiners:
            epoch = stream.epoch or ""
            for joiner in tuple(joiners.values()):
                joiner.offer(epoch, offset, message, size, exclude)
            self._release(stream)
        if stream.acks:
            self._send_acks(stream, offset)

    def _send_acks(self, stream: Stream, upto: int | None) -> None:
        for offset in sorted(stream.acks):
            if upto is None or offset <= upto:
                for call in stream.acks.pop(offset):
                    call()

    def _drain(self, stream: Stream) -> None:
        pending = stream.pending
        while pending:
            item = pending.pop(stream.last + 1, None)
            if item is None:
                break
            epoch, frame, exclude = item
            if epoch == stream.epoch:
                self._deliver(stream, stream.last + 1, frame, exclude)
        for offset in [o for o, item in pending.items()
                       if o <= stream.last or item[0] != stream.epoch]:
            del pending[offset]

    def _reset(self, stream: Stream, epoch: str, offset: int) -> None:
        """Continuity is lost: every local member continues from (``epoch``, ``offset``)."""
        stream.epoch, stream.last = epoch, offset
        self.counters["history_resets"] += 1
        logger.warning("wsplugin: history room %s reset to %s/%d (messages lost)",
                       stream.room, epoch, offset)
        message, size = text_message(reset_frame(stream.room, epoch, offset))
        joiners = stream.joiners
        self.owner.hub.deliver(stream.room, message, size, frozenset(joiners) or None)
        for joiner in tuple(joiners.values()):
            joiner.offer_reset(epoch, offset, stream.room)
        self._release(stream)
        self._send_acks(stream, None)

    # ------------------------------------------------------------------ repair
    def _schedule_sync(self, stream: Stream) -> None:
        if stream.busy:
            stream.again = True
            return
        stream.busy = True
        task = asyncio.get_running_loop().create_task(self._sync(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync(self, stream: Stream) -> None:
        try:
            while self.streams.get(stream.room) is stream:
                stream.again = False
                before = (stream.epoch, stream.last)
                try:
                    await self._sync_once(stream)
                except Exception as exc:
                    logger.info("wsplugin: history sync of %s failed: %r", stream.room, exc)
                    await asyncio.sleep(RETRY_DELAY)
                    stream.again = True
                if not stream.again:
                    return
                if (stream.epoch, stream.last) == before:
                    await asyncio.sleep(0.05)  # no progress: do not spin
        finally:
            stream.busy = False

    async def _sync_once(self, stream: Stream) -> None:
        """Read the position (first time) or the messages after the last one delivered."""
        initial = stream.epoch is None
        position, entries = await self._store().read(
            stream.room, stream.last, 0 if initial else FILL_BATCH, stream.spec
        )
        if stream.epoch is None:
            stream.epoch, stream.last = position.epoch, position.offset
            stream.ready.set()
            for joiner in tuple(stream.joiners.values()):  # answered without a position
                if not joiner.waiting and joiner.epoch is None:
                    joiner.offer_reset(position.epoch, position.offset, stream.room)
            self._release(stream)
        elif position.epoch != stream.epoch:
            self._reset(stream, position.epoch, position.offset)
        else:
            self._fill(stream, position, entries)
        self._drain(stream)
        if stream.pending or stream.last < position.offset:
            stream.again = True  # more to read (each round delivers or resets)

    def _fill(self, stream: Stream, position: Position, entries: list[Entry]) -> None:
        for offset, frame, exclude in entries:
            if offset <= stream.last:
                continue
            if offset > stream.last + 1:  # trimmed or expired before this node read them
                self._reset(stream, position.epoch, offset - 1)
            self._deliver(stream, offset, frame, exclude)
            self.counters["history_gaps_filled"] += 1
        if not entries and stream.last < position.offset:
            self._reset(stream, position.epoch, position.offset)
