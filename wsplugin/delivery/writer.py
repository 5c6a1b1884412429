"""How frames reach one client's socket: a :class:`FrameWriter`, chosen once per connection.

Two writers exist. :class:`~wsplugin.delivery.asgi_writer.ASGIWriter` works with every ASGI
server: it steps the server's ``send`` eagerly and hands it to a task when it suspends.
:class:`~wsplugin.delivery.uvicorn_writer.UvicornWriter` (the *fast path*) writes a frame
built once per message straight to the transport of a uvicorn ``websockets-sansio`` or ``wsproto``
connection, and holds the frames of one loop iteration to write them in one go ("corking").

:func:`~wsplugin.delivery.writer_choice.choose_writer` picks one when the connection opens.

The message a writer receives is the shared ASGI send event of a broadcast, built once for
every recipient, and its size. A writer derives the bytes it needs from it and caches them
in it (``wsplugin.delivery.uvicorn_writer.FRAME_KEY``), so a message is encoded once per
variant, never per recipient. A writer that negotiates something per connection
(compression) picks its variant's cache key when it is chosen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from wsplugin.types import ASGIMessage, DropCounter

if TYPE_CHECKING:
    from wsplugin.delivery.hub import FlushQueue

FastPath: TypeAlias = Literal["auto"] | bool
"""The ``fast_path`` setting: ``"auto"`` (or ``True``) where it is safe, ``False`` never."""

Compression: TypeAlias = Literal["auto"] | bool
"""The ``compression`` setting: ``"auto"`` (or ``True``): where permessage-deflate was
negotiated, the fast path sends each message compressed once for every such connection;
``False``: it sends uncompressed frames to them."""

InFlight: TypeAlias = tuple[DropCounter | None, ...]
"""The rooms of the messages in one frame (one entry per message, more when coalesced)."""


class WriterOwner(Protocol):
    """What a writer reports to its connection."""

    def count_sent(self, count: int, size: int) -> None:
        """``count`` messages of ``size`` bytes in all reached the socket."""

    def request_flush(self) -> None:
        """Call the writer's ``flush`` at the end of this loop iteration."""

    @property
    def flushes(self) -> FlushQueue:
        """The end-of-iteration writes: also says when a frame is written at once."""


class FrameWriter(Protocol):
    """Writes one connection's frames; never awaits in :meth:`write`.

    Counting: every message written is reported with ``owner.count_sent``; a message held
    for :meth:`flush` is counted when it is written; what is held when the connection ends
    is returned by :meth:`discard` (and counted as dropped by the connection).
    """

    def send(self, message: ASGIMessage) -> Awaitable[None]:
        """The ASGI ``send``: awaited by the connection's drain task and for the close frame."""

    def write(self, message: ASGIMessage, size: int, room: DropCounter | None) -> Resume | None:
        """Write (or hold until :meth:`flush`) one shared message of ``size`` bytes.

        ``None``: written or held. A :class:`Resume`: the socket pushed back; the send is
        under way and the caller awaits it in a task (later messages queue behind it).
        Raises if the socket is gone (the message is then neither written nor held).
        """

    def write_batch(self, message: ASGIMessage, size: int, rooms: InFlight) -> Resume | None:
        """Write a frame that carries ``len(rooms)`` messages now (never held)."""

    def flush(self) -> bool:
        """Write what is held; False if the socket is gone (it stays held, see discard)."""

    def discard(self) -> tuple[DropCounter | None, ...]:
        """Forget what is held (the connection ended): the rooms of those messages."""

    def release(self) -> None:
        """The connection's serving task is over: let go of what the server keeps for it
        that would otherwise wait for a garbage collection (nothing, for most writers)."""


class EndedWriter:
    """The writer of a connection whose serving task is over: every write fails as on a
    closed socket, nothing is held. A connection takes it in place of its own writer
    (:meth:`wsplugin.delivery.connection.Connection.release`), which refers back to it."""

    __slots__ = ()

    async def send(self, message: ASGIMessage) -> None:
        raise ConnectionError("the connection has ended")

    def write(self, message: ASGIMessage, size: int, room: DropCounter | None) -> Resume | None:
        raise ConnectionError("the connection has ended")

    def write_batch(self, message: ASGIMessage, size: int, rooms: InFlight) -> Resume | None:
        raise ConnectionError("the connection has ended")

    def flush(self) -> bool:
        return False

    def discard(self) -> tuple[DropCounter | None, ...]:
        return ()

    def release(self) -> None:
        return None


ENDED = EndedWriter()


class Resume:
    """``await Resume(coro, yielded)`` continues a send coroutine a writer stepped once and that
    suspended (it yielded ``yielded`` to the event loop)."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, None, Any]:
        coro: Coroutine[Any, Any, Any] = self.coro
        yielded = self.yielded
        while True:
            try:
                yield yielded  # the future the coroutine waits on: the task waits on it for us
            except BaseException as exc:  # thrown into the task (cancel): pass it on
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
