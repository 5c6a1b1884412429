"""The history contract of a broker, and its in-memory implementation.

A history store assigns each message of a history room its offset, keeps the last ``size``
messages, and hands every stored message to its sink (the node's :class:`Streams`) in
offset order: the in-memory store before ``publish`` returns, the Redis store through the
pub/sub subscription of every node, the publishing node included.
"""

from __future__ import annotations

import abc
import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from wsplugin.history import History, Position

Entry = tuple[int, str, frozenset[str]]
"""A stored message: offset, ``message`` frame (with its offset), excluded connection ids."""

PublishDone = Callable[[Position | None, BaseException | None], None]


def new_epoch() -> str:
    return secrets.token_hex(4)


def with_offset(head: str, offset: int) -> str:
    """A ``message`` frame from its head (the frame without its closing brace)."""
    return f'{head},"offset":{offset}}}'


class HistorySink(Protocol):
    """What a store tells the node: messages in offset order, subscription changes; and
    what it may ask the node: the positions the node holds for its local members."""

    def on_stream_message(
        self, room: str, epoch: str, offset: int, frame: str, exclude: frozenset[str]
    ) -> None: ...

    def on_stream_subscribed(self, room: str) -> None: ...

    def on_stream_unsubscribed(self, room: str) -> None: ...

    def tracked(self, room: str) -> Position | None:
        """The position this node delivered ``room`` up to, if it has members there."""

    def empty_positions(self) -> list[tuple[str, str]]:
        """(room, epoch) of the rooms this node has members in and nothing was published to."""


class HistoryStore(abc.ABC):
    synchronous: bool = False
    """True when messages reach the sink before ``publish`` returns (no gaps possible)."""

    sink: HistorySink | None = None

    @abc.abstractmethod
    async def publish(
        self, room: str, head: str, exclude: frozenset[str], spec: History
    ) -> Position:
        """Store a message and send it to every node; its position. BrokerError if not stored."""

    def publish_nowait(
        self, room: str, head: str, exclude: frozenset[str], spec: History, on_done: PublishDone
    ) -> None:
        """Like :meth:`publish` without waiting; ``on_done(position, error)`` hears the end.

        Raises BrokerError at once when the store is known to be unavailable.
        """
        raise NotImplementedError

    @abc.abstractmethod
    async def read(
        self, room: str, since: int | None, limit: int, spec: History
    ) -> tuple[Position, list[Entry]]:
        """The position and, oldest first, at most ``limit`` messages after offset ``since``
        (the newest ``limit`` when ``since`` is None). A room nobody published to has a
        position (epoch, 0) too; reading it stores nothing lasting."""


class _MemoryStream:
    __slots__ = ("epoch", "expires", "messages", "meta_expires", "top")

    def __init__(self, epoch: str, size: int) -> None:
        self.epoch = epoch
        self.top = 0
        self.messages: deque[Entry] = deque(maxlen=size)
        self.expires = 0.0
        self.meta_expires = 0.0


class MemoryHistory(HistoryStore):
    """One process: the streams of the rooms published to, in a dict, each bounded by its
    room's ``size`` and forgotten ``meta_ttl`` after its last publish.

    A room nobody published to has no stream and costs nothing. Its position is
    (:meth:`empty_epoch`, 0), computed, not stored: a keyed hash of the room name and the
    generation of the room's bucket. Forgetting a stream moves its bucket to the next
    generation, and a room's first publish starts its stream in the empty epoch. So a
    position (epoch, 0) handed out for an empty room recovers exactly what was published
    since (the stream started from it), or fails once a stream of that bucket was
    forgotten meanwhile: never a wrong recovery.
    """

    synchronous = True
    SWEEP_EVERY = 4096
    BUCKETS = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._streams: dict[str, _MemoryStream] = {}
        self._appends = 0
        self._key = secrets.token_bytes(16)  # a new process: new empty epochs
        self._generations = [0] * self.BUCKETS

    @property
    def held(self) -> int:
        """The number of streams held (rooms published to, not yet forgotten)."""
        return len(self._streams)

    def empty_epoch(self, room: str) -> str:
        """The epoch of ``room`` while it has no stream."""
        generation = self._generations[hash(room) % self.BUCKETS]
        digest = hashlib.blake2b(f"{generation}:{room}".encode(), key=self._key, digest_size=4)
        return digest.hexdigest()

    def _empty_position(self, room: str) -> Position:
        # the node's members already hold (epoch, 0): its stream keeps that epoch (it saw
        # every message of the room since it read the position, so none were published)
        tracked = self.sink.tracked(room) if self.sink is not None else None
        if tracked is not None and tracked.offset == 0 and tracked.epoch:
            return tracked
        return Position(self.empty_epoch(room), 0)

    def _live(self, room: str, now: float) -> _MemoryStream | None:
        stream = self._streams.get(room)
        if stream is None:
            return None
        if now > stream.meta_expires:
            self._forget(room)
            return None
        if now > stream.expires:
            stream.messages.clear()
        return stream

    def _forget(self, room: str) -> None:
        del self._streams[room]
        self._generations[hash(room) % self.BUCKETS] += 1  # its empty epoch changes

    async def publish(
        self, room: str, head: str, exclude: frozenset[str], spec: History
    ) -> Position:
        return self.append(room, head, exclude, spec)

    def publish_nowait(
        self, room: str, head: str, exclude: frozenset[str], spec: History, on_done: PublishDone
    ) -> None:
        on_done(self.append(room, head, exclude, spec), None)

    def append(self, room: str, head: str, exclude: frozenset[str], spec: History) -> Position:
        now = self.clock()
        stream = self._live(room, now)
        if stream is None:
            stream = _MemoryStream(self._empty_position(room).epoch, spec.size)
            self._streams[room] = stream
        stream.top += 1
        frame = with_offset(head, stream.top)
        stream.messages.append((stream.top, frame, exclude))
        stream.expires = now + spec.ttl
        stream.meta_expires = now + spec.meta_ttl
        self._appends += 1
        if self._appends % self.SWEEP_EVERY == 0:
            self.sweep(now)
        if self.sink is not None:
            self.sink.on_stream_message(room, stream.epoch, stream.top, frame, exclude)
        return Position(stream.epoch, stream.top)

    async def read(
        self, room: str, since: int | None, limit: int, spec: History
    ) -> tuple[Position, list[Entry]]:
        stream = self._live(room, self.clock())
        if stream is None:
            return self._empty_position(room), []
        position = Position(stream.epoch, stream.top)
        if limit <= 0 or not stream.messages:
            return position, []
        if since is None:
            return position, list(stream.messages)[-limit:]
        first = stream.messages[0][0]
        start = max(0, since + 1 - first)
        return position, [stream.messages[i] for i in
                          range(start, min(len(stream.messages), start + limit))]

    def sweep(self, now: float) -> None:
        """Forget expired messages, and streams whose metadata expired."""
        for room, stream in list(self._streams.items()):
            if now > stream.meta_expires:
                self._forget(room)
            elif now > stream.expires:
                stream.messages.clear()
