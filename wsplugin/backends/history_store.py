"""The history contract of a broker, and its in-memory implementation.

A history store assigns each message of a history room its offset, keeps the last ``size``
messages, and hands every stored message to its sink (the node's :class:`Streams`) in
offset order: the in-memory store before ``publish`` returns, the Redis store through the
pub/sub subscription of every node, the publishing node included.
"""

from __future__ import annotations

import abc
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
    """What a store tells the node: messages in offset order, subscription changes."""

    def on_stream_message(
        self, room: str, epoch: str, offset: int, frame: str, exclude: frozenset[str]
    ) -> None: ...

    def on_stream_subscribed(self, room: str) -> None: ...

    def on_stream_unsubscribed(self, room: str) -> None: ...


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
        (the newest ``limit`` when ``since`` is None). Creates the epoch of a new stream."""


class _MemoryStream:
    __slots__ = ("epoch", "expires", "messages", "meta_expires", "top")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.top = 0
        self.messages: deque[Entry] = deque(maxlen=size)
        self.expires = 0.0
        self.meta_expires = 0.0


class MemoryHistory(HistoryStore):
    """One process: streams in a dict, each bounded by its room's ``size``."""

    synchronous = True
    SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._streams: dict[str, _MemoryStream] = {}
        self._appends = 0

    def _stream(self, room: str, spec: History, now: float) -> _MemoryStream:
        stream = self._streams.get(room)
        if stream is None or now > stream.meta_expires:
            stream = self._streams[room] = _MemoryStream(spec.size)
            stream.meta_expires = now + spec.meta_ttl
        if now > stream.expires:
            stream.messages.clear()
        return stream

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
        stream = self._stream(room, spec, now)
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
        stream = self._stream(room, spec, self.clock())
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
                del self._streams[room]
            elif now > stream.expires:
                stream.messages.clear()
