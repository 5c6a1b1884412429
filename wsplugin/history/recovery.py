"""Recovery of a client joining a history room: read in pages, paced by its connection,
a bounded number at a time per node.

A client that joins with its position ``(epoch, offset)`` gets its reply (``welcome`` or
``joined``) with ``recovered: true`` and the room's position when it joined, ``top``, then
every message in ``(offset, top]``, then the live ones (the
:class:`~wsplugin.history.streams.Joiner` buffers those meanwhile); or ``recovered: false``
and nothing old.

A recovery never holds its messages all at once. It reads history in pages: the first of
one message (which proves that the whole range is still stored: a stream's offsets are
contiguous), then as many as fit in half the connection's queue bound by the largest
message seen so far, at most :data:`PAGE_MAX`. Before each message it waits until the
connection's outbound queue can take it (:meth:`Connection.room_for`), so a slow reader
holds about one queue bound and one page, whatever it recovers.

A node runs at most ``max_concurrent_recoveries`` at a time; another waits up to
``recovery_wait`` seconds for a free slot, then gets ``recovered: false``.

Paging takes time, and the stream moves on meanwhile. The joiner's buffer of live messages
is bounded like the connection's queue; when it overflows it is dropped and the recovery
reads on from history until it reaches what the node has delivered, then hands over. If
history loses messages the recovery still needs (trimmed by newer ones, expired, a new
epoch, the store failing), the client gets a ``reset`` with the room's current position
and continues from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from wsplugin.counters import RecoveryOutcome, RecoveryTally
from wsplugin.protocol import text_message

if TYPE_CHECKING:
    from wsplugin.backends.history_store import Entry, HistoryStore
    from wsplugin.config import Settings
    from wsplugin.delivery.connection import Connection
    from wsplugin.history import History, Position


class Stream(Protocol):
    """What a recovery reads of its room's stream (:class:`~.streams.Stream`)."""

    room: str
    spec: History
    epoch: str | None
    last: int


class Joiner(Protocol):
    """What a recovery uses of the recovering member (:class:`~.streams.Joiner`)."""

    conn: Connection
    items: list[Any]
    held: int
    lost: bool

    def reply(self, head: dict[str, Any] | None, position: Position | None,
              recovered: bool | None) -> None: ...

    def refuse(self, head: dict[str, Any] | None, stream: Any) -> None: ...

    def reset_to(self, stream: Any) -> None: ...

    def start(self, epoch: str | None, sent: int, room: str) -> None: ...

logger = logging.getLogger("wsplugin")

PAGE_MAX = 100
"""Most messages one history read of a recovery asks for."""

Ending = RecoveryOutcome | Literal["ended"]
"""How a recovery ended; ``ended``: the connection closed or left the room (not counted)."""


class Recoveries:
    """The recoveries of one node: their limits, their slots and their numbers."""

    def __init__(self, settings: Settings, tally: RecoveryTally) -> None:
        self.max_messages = settings.recovery_max_messages
        self.limit = settings.max_concurrent_recoveries
        self.wait = settings.recovery_wait
        self.tally = tally
        self.running = 0
        self._slots: asyncio.Semaphore | None = None

    async def recover(self, store: HistoryStore | None, stream: Stream, joiner: Joiner,
                      head: dict[str, Any] | None, top: Position | None, epoch: str, offset: int,
                      started: float) -> None:
        """Reply to ``joiner`` and replay what it missed after (``epoch``, ``offset``).

        ``top`` is the room's position when it joined (None: unknown); ``started``, the
        ``perf_counter()`` of the join.
        """
        if store is None:  # not started: nothing to read
            top = None
        replay = Replay(store, stream, joiner, epoch, offset)
        ending = await self._recover(replay, head, top)
        if ending != "ended":
            self.tally.record(ending, replay.count, time.perf_counter() - started)

    async def _recover(self, replay: Replay, head: dict[str, Any] | None,
                       top: Position | None) -> Ending:
        missed = -1 if top is None or replay.epoch != top.epoch else top.offset - replay.sent
        if top is None or not 0 <= missed <= self.max_messages:
            replay.joiner.refuse(head, replay.stream)
            return "not_recovered"
        if missed == 0:
            replay.joiner.reply(head, top, True)
            replay.joiner.start(top.epoch, top.offset, replay.stream.room)
            return "recovered"
        if not await self._acquire():
            replay.joiner.refuse(head, replay.stream)
            return "not_recovered"
        try:
            return await replay.run(head, top)
        finally:
            self._release()

    async def _acquire(self) -> bool:
        """A slot, waiting at most ``recovery_wait`` seconds for one."""
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(self.limit)
        if slots.locked():
            try:
                async with asyncio.timeout(self.wait):
                    await slots.acquire()
            except TimeoutError:
                return False
        else:
            await slots.acquire()
        self.running += 1
        return True

    def _release(self) -> None:
        self.running -= 1
        if self._slots is not None:
            self._slots.release()


class Replay:
    """One recovery under way: what it sent, and the size of its pages."""

    __slots__ = ("biggest", "count", "epoch", "joiner", "sent", "store", "stream")

    def __init__(self, store: HistoryStore | None, stream: Stream, joiner: Joiner, epoch: str,
                 offset: int) -> None:
        self.store = store
        self.stream = stream
        self.joiner = joiner
        self.epoch = epoch
        self.sent = offset  # the offset of the last message handed to the connection
        self.count = 0
        self.biggest = 0  # bytes of the largest message seen: sizes the next page

    async def run(self, head: dict[str, Any] | None, top: Position) -> Ending:
        """Reply, then page through ``(sent, top]`` (further if the joiner's buffer
        overflowed), then hand over to live delivery."""
        joiner = self.joiner
        if joiner.conn.closed:
            return "ended"
        entries = await self._page(top.offset)
        if entries is None:
            joiner.refuse(head, self.stream)
            return "not_recovered"
        joiner.reply(head, top, True)
        while True:
            if not await self._send(entries):
                return "ended"
            target = self._target(top)
            if target is None:
                break
            if self.sent >= target:
                handed = await self._hand_over(top)
                if handed is not None:
                    return "recovered" if handed else "ended"
                continue  # the buffer overflowed meanwhile: read on from history
            entries = await self._page(target)
            if entries is None:
                break
        joiner.reset_to(self.stream)
        return "reset"

    def _target(self, top: Position) -> int | None:
        """The last offset to read from history (None: the stream has a new epoch)."""
        if not self.joiner.lost:
            return top.offset  # the joiner holds every live message after it
        stream = self.stream
        return stream.last if stream.epoch == self.epoch else None

    async def _page(self, target: int) -> list[Entry] | None:
        """The next page up to ``target``, or None when history no longer has it whole."""
        stream = self.stream
        budget = self.joiner.conn.outbox.max_bytes // 2
        size = 1 if self.biggest == 0 else max(1, min(PAGE_MAX, budget // self.biggest))
        limit = min(size, target - self.sent)
        if self.store is None:
            return None
        try:
            at, entries = await self.store.read(stream.room, self.sent, limit, stream.spec)
        except Exception as exc:
            logger.info("wsplugin: recovery read of %s failed: %r", stream.room, exc)
            return None
        offsets = [entry[0] for entry in entries]
        if at.epoch != self.epoch or offsets != list(range(self.sent + 1, self.sent + limit + 1)):
            return None  # trimmed, expired, or the stream was lost meanwhile
        return entries

    async def _send(self, entries: list[Entry]) -> bool:
        """Hand ``entries`` to the connection, each once its queue can take it."""
        conn = self.joiner.conn
        room = self.stream.room
        for offset, frame, _ in entries:
            message, size = text_message(frame)
            if not await conn.room_for(size) or room not in conn.rooms:
                return False
            conn.deliver(message, size)
            self.sent = offset
            self.count += 1
            self.biggest = max(self.biggest, size)
        return True

    async def _hand_over(self, top: Position) -> bool | None:
        """The joiner becomes a live member: True; None: it must read on from history
        first; False: the connection ended.

        What the joiner buffered goes out at once, so it waits until the queue can take it.
        """
        joiner = self.joiner
        conn = joiner.conn
        while not joiner.lost:
            if conn.closed:
                return False
            if conn.accepts(joiner.held, len(joiner.items)):
                joiner.start(self.epoch, top.offset, self.stream.room)
                return True
            await conn.room_for(joiner.held, len(joiner.items))
        stream = self.stream
        if stream.epoch == self.epoch and self.sent >= stream.last:
            joiner.start(self.epoch, self.sent, stream.room)  # nothing buffered: it was dropped
            return True
        return None
