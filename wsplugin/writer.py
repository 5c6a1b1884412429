"""How frames reach one client's socket: a :class:`FrameWriter`, chosen once per connection.

Two writers exist. :class:`~wsplugin._eager.ASGIWriter` works with every ASGI server: it
steps the server's ``send`` eagerly and hands it to a task when it suspends.
:class:`~wsplugin._fastpath.UvicornWriter` (the *fast path*) writes a frame built once per
message straight to the transport of a uvicorn ``websockets-sansio`` or ``wsproto``
connection, and holds the frames of one loop iteration to write them in one go ("corking").

:func:`choose_writer` picks one when the connection opens and never again. It checks, at
that moment, every server attribute the fast path will use; on the first surprise (another
server, another uvicorn protocol, a renamed attribute, an extension other than
permessage-deflate, a middleware that wraps websocket sends, ``fast_path=False``) the
connection gets the ASGI writer. Which path a server got is logged once per process at
INFO (``wsplugin`` logger).

The message a writer receives is the shared ASGI send event of a broadcast, built once for
every recipient, and its size. A writer derives the bytes it needs from it and caches them
in it (``wsplugin._fastpath.FRAME_KEY``), so a message is encoded once per variant, never
per recipient. A writer that negotiates something per connection (compression) picks its
variant's cache key when it is chosen.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from wsplugin import _fastpath
from wsplugin._eager import ASGIWriter, Resume
from wsplugin.types import ASGIMessage, ASGISend

if TYPE_CHECKING:
    from wsplugin.hub import Room

logger = logging.getLogger("wsplugin")

FastPath: TypeAlias = Literal["auto"] | bool
"""The ``fast_path`` setting: ``"auto"`` (or ``True``) where it is safe, ``False`` never."""

Compression: TypeAlias = Literal["auto"] | bool
"""The ``compression`` setting: ``"auto"`` (or ``True``): where permessage-deflate was
negotiated, the fast path sends each message compressed once for every such connection;
``False``: it sends uncompressed frames to them."""

InFlight: TypeAlias = "tuple[Room | None, ...]"
"""The rooms of the messages in one frame (one entry per message, more when coalesced)."""


class WriterOwner(Protocol):
    """What a writer reports to its connection."""

    def count_sent(self, count: int, size: int) -> None:
        """``count`` messages of ``size`` bytes in all reached the socket."""

    def request_flush(self) -> None:
        """Call the writer's ``flush`` at the end of this loop iteration."""


class FrameWriter(Protocol):
    """Writes one connection's frames; never awaits in :meth:`write`.

    Counting: every message written is reported with ``owner.count_sent``; a message held
    for :meth:`flush` is counted when it is written; what is held when the connection ends
    is returned by :meth:`discard` (and counted as dropped by the connection).
    """

    send: ASGISend
    """The ASGI ``send``: awaited by the connection's drain task and for the close frame."""

    def write(self, message: ASGIMessage, size: int, room: Room | None) -> Resume | None:
        """Write (or hold until :meth:`flush`) one shared message of ``size`` bytes.

        ``None``: written or held. A :class:`Resume`: the socket pushed back; the send is
        under way and the caller awaits it in a task (later messages queue behind it).
        Raises if the socket is gone (the message is then neither written nor held).
        """

    def write_batch(self, message: ASGIMessage, size: int, rooms: InFlight) -> Resume | None:
        """Write a frame that carries ``len(rooms)`` messages now (never held)."""

    def flush(self) -> bool:
        """Write what is held; False if the socket is gone (it stays held, see discard)."""

    def discard(self) -> tuple[Room | None, ...]:
        """Forget what is held (the connection ended): the rooms of those messages."""


_logged: set[str] = set()


def _log_once(level: int, message: str, *args: Any) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        logger.log(level, "wsplugin: %s", text)


def choose_writer(
    owner: WriterOwner, send: ASGISend, scope: Any, fast_path: FastPath,
    compression: Compression = "auto",
) -> FrameWriter:
    """The writer of a connection that was just accepted (see the module docstring).

    ``scope`` is the connection's ASGI scope (``None``: no fast path); the server's own
    ``send``, captured outermost by :func:`wsplugin._fastpath.capture_server_send`, is
    read from it.
    """
    if fast_path is False or scope is None:
        if fast_path is False:
            _log_once(logging.INFO, "websocket writes use the ASGI send (fast_path=False)")
        return ASGIWriter(owner, send)
    writer, reason = _fastpath.uvicorn_writer(owner, send, scope, compression)
    if writer is not None:
        _log_once(logging.INFO, "websocket writes use the uvicorn %s fast path",
                  writer.flavour.name)
        return writer
    if reason:
        level = logging.WARNING if reason is _fastpath.WRAPPED else logging.INFO
        _log_once(level, "websocket writes use the ASGI send: %s", reason)
    return ASGIWriter(owner, send, _fastpath.server_send(scope))
