"""The ASGI writer: step the ASGI ``send`` eagerly, and only make a task if it must wait.

An ASGI ``send`` on an open, writable websocket usually completes without suspending, so
a broadcast writes to every idle connection in one pass, without a task wake-up per
recipient (what ``websockets.broadcast`` does). Nothing here relies on it: when the send
does suspend (the transport is paused because the client reads slowly, or the server
simply awaits something), :class:`~wsplugin.delivery.writer.Resume` hands the suspended
coroutine to a task, which drives it on exactly as if it had been awaited there.
"""

from __future__ import annotations

from wsplugin.delivery.writer import InFlight, Resume, WriterOwner
from wsplugin.types import ASGIMessage, ASGISend, DropCounter

NOTHING_HELD: tuple[DropCounter | None, ...] = ()




class ASGIWriter:
    """The :class:`~wsplugin.delivery.writer.FrameWriter` of any ASGI server: its own ``send``.

    ``direct_send``, when given, is the server's own ``send`` for the data frames written
    without waiting (the server's ``send`` captured outermost, when no middleware wraps
    it: see :mod:`wsplugin.delivery.uvicorn_writer`), which saves the framework's wrappers per
    recipient;
    everything else (the close frame, what waited in the queue) takes ``send``, the one the
    framework tracks. Nothing is held between calls: :meth:`flush` has nothing to do.
    """

    __slots__ = ("direct_send", "owner", "send")

    def __init__(self, owner: WriterOwner, send: ASGISend,
                 direct_send: ASGISend | None = None) -> None:
        self.owner = owner
        self.send = send
        self.direct_send = send if direct_send is None else direct_send

    def write(self, message: ASGIMessage, size: int, room: DropCounter | None) -> Resume | None:
        """Send one message now: ``None`` once sent (and counted), or the suspended send."""
        coro = self.direct_send(message)
        try:
            yielded = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            self.owner.count_sent(1, size)
            return None
        return Resume(coro, yielded)

    def write_batch(self, message: ASGIMessage, size: int, rooms: InFlight) -> Resume | None:
        """Like :meth:`write` for a frame carrying ``len(rooms)`` messages (coalesced)."""
        coro = self.direct_send(message)
        try:
            yielded = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            self.owner.count_sent(len(rooms), size)
            return None
        return Resume(coro, yielded)

    def flush(self) -> bool:
        return True

    def discard(self) -> tuple[DropCounter | None, ...]:
        return NOTHING_HELD

    def release(self) -> None:
        return None
