"""One websocket connection: it coordinates its writer, outbound queue and reading side.

Delivery never awaits a client's socket. An idle connection hands each message to its
:class:`~wsplugin.delivery.writer.FrameWriter`, which writes it now (or at the end of the loop
iteration); only when the transport pushes back does the connection get a drain task, and
then later messages wait in its :class:`~wsplugin.delivery.outbox.Outbox`, bounded in messages and
bytes. Overflow applies the slow-consumer policy and every dropped message is counted on
the connection, the room and the manager. Every exit path runs one cleanup, exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from wsplugin.counters import Counters
from wsplugin.delivery.hub import FlushQueue
from wsplugin.delivery.inbound import Inbound
from wsplugin.delivery.outbox import Outbox
from wsplugin.delivery.writer import ENDED, FrameWriter, InFlight, Resume
from wsplugin.delivery.writer_choice import choose_writer
from wsplugin.events import EventBus
from wsplugin.info import ConnectionInfo
from wsplugin.protocol import CloseCode, text_message
from wsplugin.types import ASGIMessage, ASGIReceive, ASGISend, DropCounter, Identity
from wsplugin.users import User

if TYPE_CHECKING:
    from wsplugin.config import Settings

logger = logging.getLogger("wsplugin")

CLOSE_TIMEOUT = 5.0
"""Seconds a close frame may take to reach a client before the connection is abandoned."""


class ConnectionOwner(Protocol):
    """What a connection needs from the manager that owns it, and nothing more."""

    @property
    def settings(self) -> Settings: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def flushes(self) -> FlushQueue: ...

    @property
    def draining(self) -> set[Connection]:
        """The connections whose socket pushed back (a drain task runs): the only ones the
        heartbeat looks at, however many connections are idle."""

    @property
    def node_id(self) -> str: ...

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task (the close handshake) alive until it ends."""

    def connection_closed(self, conn: Connection, code: int, reason: str) -> None:
        """The connection ended (called exactly once): forget it everywhere."""


class Connection:
    """A websocket handed to the manager, managed or user-owned.

    It keeps the connection's identity and counters and coordinates the parts that change
    for other reasons: the writer (``frames``, how bytes reach the socket), the outbound
    queue (``outbox``) and the reading side (``inbound``). Its 24 slots, more than the
    ~15 we aim for, are: the identity read by hooks and the admin (10, with the token's
    ``expires_at``), its owner (the
    manager, through :class:`ConnectionOwner`) and the shared counters (2), the outbound
    counters and end state that every delivery reads or
    bumps (5: plain slots, so the hot path pays no extra indirection), the three parts,
    and the drain task's state (4: task, progress, messages in flight, flush pending).
    """

    __slots__ = (
        "_draining",
        "_flush_pending",
        "_in_flight",
        "_progress",
        "bytes_out",
        "close_code",
        "closed",
        "coalesce",
        "connected_at",
        "counters",
        "dropped",
        "expires_at",
        "frames",
        "id",
        "identity",
        "inbound",
        "messages_out",
        "outbox",
        "owner",
        "remote",
        "rooms",
        "user",
        "user_agent",
        "websocket",
    )

    def __init__(
        self,
        owner: ConnectionOwner,
        connection_id: str,
        send: ASGISend,
        receive: ASGIReceive,
        *,
        identity: Identity = None,
        user: User | None = None,
        remote: str = "",
        user_agent: str = "",
        coalesce: bool = False,
        websocket: Any = None,
        expires_at: float | None = None,
    ) -> None:
        settings = owner.settings
        self.owner = owner
        self.counters: Counters = owner.counters
        self.id = connection_id
        self.websocket = websocket
        self.identity = identity
        self.user = user
        self.remote = remote
        self.user_agent = user_agent
        self.coalesce = coalesce
        self.connected_at = time.time()
        self.expires_at = expires_at  # the token's exp (unix time), shown to operators
        self.rooms: set[str] = set()
        self.messages_out = self.bytes_out = self.dropped = 0
        self.closed = False
        self.close_code: int | None = None
        self.outbox = Outbox(settings.max_queue_messages, settings.max_queue_bytes, coalesce)
        self.inbound = Inbound(receive, settings, self.counters)
        self._draining: asyncio.Task[None] | None = None
        self._progress = 0.0
        self._in_flight: InFlight = ()
        self._flush_pending = False
        scope = getattr(websocket, "scope", None)
        self.frames: FrameWriter = choose_writer(self, send, scope, settings.fast_path,
                                                 settings.compression)

    # ----------------------------------------------------------------- outbound
    def deliver(self, message: ASGIMessage, size: int, room: DropCounter | None = None) -> bool:
        """Write, hold or queue one message without awaiting the socket, after a publish
        that waits for the end of the iteration (see :class:`FlushQueue`)."""
        self.owner.flushes.settle()  # a publish before this one goes first
        return self.take(message, size, room)

    def take(self, message: ASGIMessage, size: int, room: DropCounter | None = None) -> bool:
        """Write, hold or queue one shared message of a publish, handed over in order."""
        if self.closed:
            return False
        if self._draining is None and not self.coalesce:
            try:
                pending = self.frames.write(message, size, room)
            except Exception as exc:
                self._in_flight = (room,)
                self._send_failed(exc)
                return False
            if pending is not None:
                self._start_drain(pending, size, (room,))
            return True
        if not self._enqueue(message, size, room):
            return False
        if self._draining is None and not self._flush_pending:
            self._flush_pending = True  # coalesce: one frame per loop iteration
            self.owner.flushes.schedule(self)
        return True

    def deliver_text(self, text: str) -> bool:
        message, size = text_message(text)
        return self.deliver(message, size)

    async def room_for(self, size: int, count: int = 1) -> bool:
        """Wait until ``count`` messages of ``size`` bytes in all can be delivered without
        overflowing the outbound queue; False once the connection has ended.

        For a producer that paces itself by this connection (a history recovery): it never
        makes the queue overflow, so it holds at most the queue's bounds, however slowly
        the client reads. While the socket pushes back it waits for the queue to be written.
        """
        while not self.closed and not self.accepts(size, count):
            draining = self._draining
            if draining is None:  # coalesce mode: the end-of-iteration flush writes the queue
                self.request_flush()
                await asyncio.sleep(0)
            else:
                await asyncio.wait((draining,))
        return not self.closed

    def accepts(self, size: int, count: int = 1) -> bool:
        """Whether :meth:`deliver` of ``count`` messages (``size`` bytes) would neither queue
        them beyond the queue's bounds nor drop anything."""
        if self._draining is None and not (self.coalesce and self.outbox.items):
            return True  # written at once (or held until the end of this loop iteration)
        return self.outbox.fits(size, count)

    @property
    def flushes(self) -> FlushQueue:
        return self.owner.flushes

    def request_flush(self) -> None:
        """The writer holds frames: :meth:`flush` at the end of this loop iteration."""
        if not self._flush_pending:
            self._flush_pending = True
            self.owner.flushes.schedule(self)

    def flush(self) -> None:
        """End of a loop iteration: write held frames; in coalesce mode, queued messages."""
        self._flush_pending = False
        if self.closed:
            return
        if not self.frames.flush():
            self._send_failed(ConnectionError("transport closed"))
            return
        if self._draining is not None or not self.outbox.items:
            return
        message, rooms, size = self.outbox.next_batch()
        try:
            pending = self.frames.write_batch(message, size, rooms)
        except Exception as exc:
            self._in_flight = rooms
            self._send_failed(exc)
            return
        if pending is not None:
            self._start_drain(pending, size, rooms)

    def _flush_held(self) -> bool:
        """Write what the writer holds; False if the socket went away (now cleaned up)."""
        self.owner.flushes.settle()  # a publish that waits for the end of the iteration
        if self.frames.flush():
            return True
        self._send_failed(ConnectionError("transport closed"))
        return False

    def _start_drain(self, pending: Resume, size: int, rooms: InFlight) -> None:
        """The socket pushed back: a task finishes the send, then empties the queue."""
        loop = asyncio.get_running_loop()
        self._progress = loop.time()
        self._in_flight = rooms  # counted as dropped if the connection ends before it is sent
        self._draining = loop.create_task(self._drain(pending, size))
        self.owner.draining.add(self)

    async def _drain(self, pending: Resume, size: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await pending
            self._sent(size, loop)
            outbox = self.outbox
            while outbox.items and not self.closed:
                message, self._in_flight, size = outbox.next_batch()
                await self.frames.send(message)
                self._sent(size, loop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._send_failed(exc)
        finally:
            self._draining = None
            self.owner.draining.discard(self)

    def _enqueue(self, message: ASGIMessage, size: int, room: DropCounter | None) -> bool:
        if self.outbox.put(message, size, room):
            return True
        if self.owner.settings.slow_consumer == "close":
            self._count_drop(room)
            self.counters.slow_closes += 1
            self.owner.events.emit("slow_close", connection_id=self.id,
                                     identity=self.identity_text, detail="queue overflow")
            self.close(CloseCode.TOO_SLOW, "too slow: outbound queue overflowed")
            return False
        dropped = self.outbox.put_dropping_oldest(message, size, room)
        if dropped is None:
            self._count_drop(room)
            return False
        for old_room in dropped:
            self._count_drop(old_room)
        if dropped:
            self.owner.events.emit("dropped", connection_id=self.id,
                                     identity=self.identity_text, detail=str(len(dropped)))
        return True

    def _count_drop(self, room: DropCounter | None) -> None:
        self.dropped += 1
        self.counters.dropped += 1
        if room is not None:
            room.dropped += 1

    def _sent(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        count = len(self._in_flight)
        self._in_flight = ()
        self._progress = loop.time()
        self.count_sent(count, size)

    def count_sent(self, count: int, size: int) -> None:
        """``count`` messages of ``size`` bytes in all went to the socket."""
        self.messages_out += count
        self.bytes_out += size
        counters = self.counters
        counters.messages_out += count
        counters.bytes_out += size

    def _send_failed(self, exc: Exception) -> None:
        """The socket is gone (reset, closed): clean up, there is nobody to tell."""
        logger.debug("send to %s failed: %r", self.id, exc)
        self._finish(CloseCode.INTERNAL if not _is_disconnect(exc) else 1006, "send failed")

    def stalled_for(self, now: float) -> float:
        """Seconds the drain task has made no progress while messages wait (0 when healthy)."""
        if self._draining is None:
            return 0.0
        return now - self._progress

    @property
    def queue_depth(self) -> int:
        return len(self.outbox.items)

    @property
    def queued_bytes(self) -> int:  # read by wsplugin.metrics at scrape time
        return self.outbox.bytes

    @property
    def identity_text(self) -> str | None:
        if self.user is not None:
            return self.user.id
        return None if self.identity is None else str(self.identity)

    @property
    def user_id(self) -> str | None:
        """The id of this connection's user (``None``: no user)."""
        user = self.user
        return None if user is None else user.id

    @property
    def messages_in(self) -> int:
        return self.inbound.messages

    @property
    def bytes_in(self) -> int:
        return self.inbound.bytes

    # ----------------------------------------------------------------- closing
    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the server side: clean up now, send the close frame in the background."""
        if self.closed or not self._flush_held():  # what was sent before goes out first
            return
        self._finish(code, reason)
        self.owner.track(asyncio.get_running_loop().create_task(self._close(code, reason)))

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the reading task itself: clean up, then send the close frame."""
        if self.closed:
            return
        self.inbound.aborting = True
        if not self._flush_held():
            return
        self._finish(code, reason)
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Send the close frame, then give the client time to answer it (not when called by
        the reader itself); each step waits at most ``CLOSE_TIMEOUT``."""
        message = {"type": "websocket.close", "code": int(code), "reason": reason[:120]}
        try:
            await asyncio.wait_for(self.frames.send(message), CLOSE_TIMEOUT)
        except Exception as exc:  # includes TimeoutError  # the client is gone or stuck
            logger.debug("close of %s not sent: %r", self.id, exc)
        await self.inbound.wait_answer(CLOSE_TIMEOUT)

    def abort_reader(self) -> None:
        """Make a reader blocked in :meth:`receive` return ``None``."""
        self.inbound.abort()

    def disconnected(self, code: int | None) -> None:
        """The client closed or vanished: stop reading and clean up."""
        self.inbound.aborting = True
        self._finish(1005 if code is None else code, "client closed")

    def _finish(self, code: int, reason: str) -> None:
        """The one cleanup path: runs exactly once, whichever way the connection ends."""
        if self.closed:
            return
        self.owner.flushes.settle()  # what was published before counts as taken
        self.closed = True
        self.close_code = code
        for room in self._in_flight:  # what will never be sent is counted, never silent
            self._count_drop(room)
        self._in_flight = ()
        for room in self.frames.discard():
            self._count_drop(room)
        for room in self.outbox.clear():
            self._count_drop(room)
        draining = self._draining
        if draining is not None and draining is not asyncio.current_task():
            draining.cancel()
        self.owner.connection_closed(self, code, reason)

    def release(self) -> None:
        """The task that served this connection is done (it ended, see :meth:`_finish`):
        let go of the writer. The writer refers back to this connection, and through the
        server's protocol object to everything the connection held; kept, the two form a
        cycle that only a garbage collection frees, and with long-lived connections that
        is a full one (rare, see :mod:`wsplugin.heap`), so under reconnects every ended
        connection's memory would pile up until then. A write after this fails as on a
        closed socket."""
        frames, self.frames = self.frames, ENDED
        frames.release()

    # ----------------------------------------------------------------- inbound
    def bind_reader(self, task: asyncio.Task[Any] | None) -> None:
        """The task that reads this connection (aborted if a close is never answered)."""
        self.inbound.task = task

    def receive(self) -> Coroutine[Any, Any, str | bytes | None]:
        """``await conn.receive()``: the next frame from the client, or ``None`` once the
        connection has ended (:meth:`wsplugin.delivery.inbound.Inbound.read`)."""
        return self.inbound.read(self)

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            id=self.id,
            identity=self.identity_text,
            rooms=tuple(sorted(self.rooms)),
            remote=self.remote,
            user_agent=self.user_agent,
            connected_at=self.connected_at,
            messages_in=self.inbound.messages,
            messages_out=self.messages_out,
            bytes_in=self.inbound.bytes,
            bytes_out=self.bytes_out,
            queue_depth=len(self.outbox.items),
            dropped=self.dropped,
            node=self.owner.node_id,
            user=self.user_id,
            info=None if self.user is None else self.user.info,
            expires_at=self.expires_at,
        )


def _is_disconnect(exc: Exception) -> bool:
    return isinstance(exc, OSError) or type(exc).__name__ in (
        "ClientDisconnected", "WebSocketDisconnect", "ConnectionClosed", "RuntimeError")
