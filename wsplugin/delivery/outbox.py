"""The outbound queue of one connection: bounded in messages and bytes, coalesced batches.

Messages wait here only while the socket pushes back (a writer task is draining) or, in
coalesce mode, until the end of the loop iteration. The queue itself keeps no counters:
it returns what it could not keep and the connection counts the drops. An empty queue
holds no deque (a deque costs ~760 bytes, and most connections never queue anything):
``items`` is the shared empty tuple until a message waits, and again once it is empty
(in coalesce mode, where messages wait every iteration, the deque is kept once made).
"""

from __future__ import annotations

from collections import deque

from wsplugin.types import ASGIMessage, DropCounter

Outgoing = tuple[ASGIMessage, int, "DropCounter | None"]
"""A queued message: the shared ASGI send event, its size, its room (for drop counts)."""

EMPTY: tuple[Outgoing, ...] = ()


class Outbox:
    """Queued messages of one connection and their total size."""

    __slots__ = ("bytes", "coalesce", "items", "max_bytes", "max_messages")

    def __init__(self, max_messages: int, max_bytes: int, coalesce: bool) -> None:
        self.items: deque[Outgoing] | tuple[Outgoing, ...] = EMPTY
        self.bytes = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.coalesce = coalesce

    def __len__(self) -> int:
        return len(self.items)

    def fits(self, size: int, count: int = 1) -> bool:
        """Whether ``count`` more messages of ``size`` bytes in all stay within both bounds."""
        return len(self.items) + count <= self.max_messages and self.bytes + size <= self.max_bytes

    def put(self, message: ASGIMessage, size: int, room: DropCounter | None) -> bool:
        """Queue the message if it fits within both bounds."""
        if self.fits(size):
            self._queue().append((message, size, room))
            self.bytes += size
            return True
        return False

    def _queue(self) -> deque[Outgoing]:
        items = self.items
        if isinstance(items, deque):
            return items
        queue: deque[Outgoing] = deque()
        self.items = queue
        return queue

    def _popleft(self, items: deque[Outgoing]) -> Outgoing:
        item = items.popleft()
        if not items and not self.coalesce:  # coalescing refills it every iteration
            self.items = EMPTY
        return item

    def put_dropping_oldest(
        self, message: ASGIMessage, size: int, room: DropCounter | None
    ) -> list[DropCounter | None] | None:
        """Make room by dropping the oldest messages: their rooms (``None``: the message is
        bigger than the whole queue and was not queued)."""
        if size > self.max_bytes:
            return None
        items = self._queue()
        dropped: list[DropCounter | None] = []
        while items and (len(items) >= self.max_messages or self.bytes + size > self.max_bytes):
            _, old_size, old_room = items.popleft()
            self.bytes -= old_size
            dropped.append(old_room)
        items.append((message, size, room))
        self.bytes += size
        return dropped

    def next_batch(self) -> tuple[ASGIMessage, tuple[DropCounter | None, ...], int]:
        """The next frame to write; in coalesce mode, queued text messages joined by newlines."""
        items = self.items
        assert isinstance(items, deque), "next_batch of an empty queue"
        message, size, room = self._popleft(items)
        self.bytes -= size
        if not self.coalesce or not items or "text" not in message:
            return message, (room,), size
        texts = [message["text"]]
        rooms = [room]
        total = size
        while items and "text" in items[0][0]:
            next_message, next_size, next_room = self._popleft(items)
            self.bytes -= next_size
            texts.append(next_message["text"])
            rooms.append(next_room)
            total += next_size
        return {"type": "websocket.send", "text": "\n".join(texts)}, tuple(rooms), total

    def clear(self) -> list[DropCounter | None]:
        """Empty the queue (the connection ended): the rooms of what was waiting."""
        rooms = [room for _, _, room in self.items]
        self.items = EMPTY
        self.bytes = 0
        return rooms
