"""One websocket connection: a bounded outbound queue, eager writes, one cleanup path.

Delivery never awaits a client's socket. An idle connection is written to eagerly (the
ASGI ``send`` of an open, writable socket finishes without suspending); only when the
transport pushes back does the connection get a writer task, and then later messages wait
in a queue bounded in messages and bytes. Overflow applies the slow-consumer policy and
every dropped message is counted on the connection, the room and the manager.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from wsplugin._eager import DONE, Resume, step
from wsplugin._fastpath import FastWriter, encode_frame
from wsplugin.info import ConnectionInfo
from wsplugin.protocol import CloseCode
from wsplugin.ratelimit import TokenBucket
from wsplugin.types import ASGIMessage, ASGIReceive, ASGISend, Frame, Identity

if TYPE_CHECKING:
    from wsplugin.hub import Room
    from wsplugin.manager import WebSocketManager

logger = logging.getLogger("wsplugin")

CLOSE_TIMEOUT = 5.0
"""Seconds a close frame may take to reach a client before the connection is abandoned."""

CORK_BYTES = 65536
"""Corked frames are written at the end of the loop iteration, or once they reach this size."""

Outgoing = tuple[ASGIMessage, int, "Room | None"]
InFlight = tuple["Room | None", ...]
"""The rooms of the messages in a frame being written (one entry per message)."""


class Counters:
    """Manager-wide counters, shared by every connection (one attribute bump per event)."""

    __slots__ = ("bytes_in", "bytes_out", "dropped", "messages_in", "messages_out",
                 "publish_errors", "slow_closes")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.slow_closes = 0
        self.publish_errors = 0


def text_message(text: str) -> tuple[ASGIMessage, int]:
    """A prebuilt ASGI send event and its size, shared by every recipient."""
    size = len(text) if text.isascii() else len(text.encode())
    return {"type": "websocket.send", "text": text}, size


def bytes_message(data: bytes) -> tuple[ASGIMessage, int]:
    return {"type": "websocket.send", "bytes": data}, len(data)


def frame_message(frame: Frame) -> tuple[ASGIMessage, int]:
    """The ASGI send event of an encoded frame (text or binary)."""
    return bytes_message(frame) if isinstance(frame, bytes) else text_message(frame)


class Connection:
    """A websocket handed to the manager, managed or user-owned."""

    __slots__ = (
        "_aborting",
        "_bucket",
        "_close_task",
        "_corked",
        "_corked_bytes",
        "_corked_extra",
        "_corked_room",
        "_flush_pending",
        "_in_flight",
        "_in_receive",
        "_progress",
        "_queue",
        "_queued_bytes",
        "_reader",
        "_receive",
        "_send",
        "_writer",
        "bytes_in",
        "bytes_out",
        "close_code",
        "closed",
        "coalesce",
        "connected_at",
        "counters",
        "dropped",
        "fast",
        "id",
        "identity",
        "manager",
        "messages_in",
        "messages_out",
        "remote",
        "rooms",
        "user_agent",
        "websocket",
    )

    def __init__(
        self,
        manager: WebSocketManager,
        connection_id: str,
        send: ASGISend,
        receive: ASGIReceive,
        *,
        identity: Identity = None,
        remote: str = "",
        user_agent: str = "",
        coalesce: bool = False,
        websocket: Any = None,
    ) -> None:
        settings = manager.settings
        self.manager = manager
        self.counters: Counters = manager.counters
        self.id = connection_id
        self.websocket = websocket
        self.identity = identity
        self.remote = remote
        self.user_agent = user_agent
        self.coalesce = coalesce
        self.connected_at = time.time()
        self.rooms: set[str] = set()
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.dropped = 0
        self.closed = False
        self.close_code: int | None = None
        self._send = send
        self._receive = receive
        self._queue: deque[Outgoing] = deque()
        self._queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._progress = 0.0
        self._close_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._in_receive = False
        self._aborting = False
        self._flush_pending = False
        self._in_flight: InFlight = ()
        self.fast: FastWriter | None = None
        self._corked: bytes | None = None
        self._corked_room: Room | None = None
        self._corked_extra: list[tuple[bytes, Room | None]] | None = None
        self._corked_bytes = 0
        rate = settings.rate_limit
        self._bucket = TokenBucket(*rate) if rate is not None else None

    # ----------------------------------------------------------------- outbound
    def deliver(self, message: ASGIMessage, size: int, room: Room | None = None) -> bool:
        """Queue or write one prebuilt message without awaiting the socket."""
        if self.closed:
            return False
        if self._writer is None and not self.coalesce:
            fast = self.fast
            if fast is not None and fast.ready():
                self._cork(encode_frame(message), size, room)
                return True
            return self._write_now(message, size, (room,))
        if not self._enqueue(message, size, room):
            return False
        if self._writer is None and not self._flush_pending:
            self._flush_pending = True  # coalesce: one frame per loop iteration
            self.manager.schedule_flush(self)
        return True

    def _write_now(self, message: ASGIMessage, size: int, rooms: InFlight) -> bool:
        """Write eagerly; if the transport pushes back, a writer task takes over.

        ``rooms`` has one entry per message in the frame (more than one when coalesced).
        """
        count = len(rooms)
        fast = self.fast
        if fast is not None and fast.write(encode_frame(message)):
            self._count_sent(count, size)
            return True
        coro = self._send(message)
        try:
            yielded = step(coro)
        except Exception as exc:
            self._in_flight = rooms
            self._send_failed(exc)
            return False
        if yielded is DONE:
            self._count_sent(count, size)
            return True
        loop = asyncio.get_running_loop()
        self._progress = loop.time()
        self._in_flight = rooms  # counted as dropped if the connection ends before it is sent
        self._writer = loop.create_task(self._drain(Resume(coro, yielded), size))
        return True

    def _cork(self, frame: bytes, size: int, room: Room | None) -> None:
        """Fast path: hold the frame until the end of this loop iteration.

        Frames for one connection that arrive in the same iteration (a burst of publishes
        read in one go) then leave in one write: one syscall, still one message per frame.
        The common case, one frame per iteration, allocates nothing.
        """
        if self._corked is None:
            self._corked = frame
            self._corked_room = room
            self._corked_bytes = size
            if not self._flush_pending:
                self._flush_pending = True
                self.manager.schedule_flush(self)
            return
        extra = self._corked_extra
        if extra is None:
            self._corked_extra = [(frame, room)]
        else:
            extra.append((frame, room))
        self._corked_bytes += size
        if self._corked_bytes >= CORK_BYTES:  # a producer that never yields: write now
            self._uncork()

    def _uncork(self) -> None:
        first, extra = self._corked, self._corked_extra
        self._corked = self._corked_extra = None
        if first is None:
            return
        data = first if extra is None else b"".join([first, *(f for f, _ in extra)])
        count = 1 if extra is None else 1 + len(extra)
        fast = self.fast
        if fast is None or not fast.write(data, paused_ok=True):
            rooms = [self._corked_room, *(r for _, r in extra or ())]
            self._in_flight = tuple(rooms)  # the socket went away meanwhile: counted
            self._send_failed(ConnectionError("transport closed"))
            return
        self._count_sent(count, self._corked_bytes)

    def flush(self) -> None:
        """End of a loop iteration: write corked frames; in coalesce mode, queued messages."""
        self._flush_pending = False
        if self._corked is not None and not self.closed:
            self._uncork()
        if self.closed or self._writer is not None or not self._queue:
            return
        message, rooms, size = self._next_batch()
        self._write_now(message, size, rooms)

    def deliver_text(self, text: str) -> bool:
        message, size = text_message(text)
        return self.deliver(message, size)

    def _enqueue(self, message: ASGIMessage, size: int, room: Room | None) -> bool:
        settings = self.manager.settings
        queue = self._queue
        if len(queue) < settings.max_queue_messages and (
            self._queued_bytes + size <= settings.max_queue_bytes
        ):
            queue.append((message, size, room))
            self._queued_bytes += size
            return True
        if settings.slow_consumer == "close":
            self._count_drop(room)
            self.counters.slow_closes += 1
            self.manager.events.emit("slow_close", connection_id=self.id,
                                     identity=self.identity_text, detail="queue overflow")
            self.close(CloseCode.TOO_SLOW, "too slow: outbound queue overflowed")
            return False
        return self._drop_oldest(message, size, room)

    def _drop_oldest(self, message: ASGIMessage, size: int, room: Room | None) -> bool:
        settings = self.manager.settings
        if size > settings.max_queue_bytes:
            self._count_drop(room)
            return False
        queue = self._queue
        dropped = 0
        while queue and (len(queue) >= settings.max_queue_messages
                         or self._queued_bytes + size > settings.max_queue_bytes):
            _, old_size, old_room = queue.popleft()
            self._queued_bytes -= old_size
            self._count_drop(old_room)
            dropped += 1
        queue.append((message, size, room))
        self._queued_bytes += size
        if dropped:
            self.manager.events.emit("dropped", connection_id=self.id,
                                     identity=self.identity_text, detail=str(dropped))
        return True

    def _count_drop(self, room: Room | None) -> None:
        self.dropped += 1
        self.counters.dropped += 1
        if room is not None:
            room.dropped += 1

    async def _drain(self, pending: Resume, size: int) -> None:
        """The writer: finish the suspended send, then empty the queue, then go away."""
        loop = asyncio.get_running_loop()
        try:
            await pending
            self._sent(size, loop)
            while self._queue and not self.closed:
                message, self._in_flight, size = self._next_batch()
                await self._send(message)
                self._sent(size, loop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._send_failed(exc)
        finally:
            self._writer = None

    def _next_batch(self) -> tuple[ASGIMessage, InFlight, int]:
        """The next frame to write; in coalesce mode, queued text messages joined by newlines."""
        queue = self._queue
        message, size, room = queue.popleft()
        self._queued_bytes -= size
        if not self.coalesce or not queue or "text" not in message:
            return message, (room,), size
        texts = [message["text"]]
        rooms = [room]
        total = size
        while queue and "text" in queue[0][0]:
            next_message, next_size, next_room = queue.popleft()
            self._queued_bytes -= next_size
            texts.append(next_message["text"])
            rooms.append(next_room)
            total += next_size
        return {"type": "websocket.send", "text": "\n".join(texts)}, tuple(rooms), total

    def _sent(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        count = len(self._in_flight)
        self._in_flight = ()
        self._progress = loop.time()
        self._count_sent(count, size)

    def _count_sent(self, count: int, size: int) -> None:
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
        """Seconds the writer has made no progress while messages wait (0 when healthy)."""
        if self._writer is None:
            return 0.0
        return now - self._progress

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:  # read by wsplugin.metrics at scrape time
        return self._queued_bytes

    @property
    def identity_text(self) -> str | None:
        return None if self.identity is None else str(self.identity)

    # ----------------------------------------------------------------- closing
    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the server side: clean up now, send the close frame in the background."""
        if self.closed:
            return
        if self._corked is not None:  # what was sent before the close goes out before it
            self._uncork()
            if self.closed:  # the socket was gone
                return
        self._finish(code, reason)
        self._close_task = asyncio.get_running_loop().create_task(self._send_close(code, reason))
        self.manager.track(self._close_task)

    async def _send_close(self, code: int, reason: str) -> None:
        message = {"type": "websocket.close", "code": int(code), "reason": reason[:120]}
        try:
            await asyncio.wait_for(self._send(message), CLOSE_TIMEOUT)
        except Exception as exc:  # includes TimeoutError  # the client is gone or stuck
            logger.debug("close of %s not sent: %r", self.id, exc)
        await self._await_reader()

    async def _await_reader(self) -> None:
        """Give the client ``CLOSE_TIMEOUT`` seconds to answer the close, then stop reading."""
        reader = self._reader
        if reader is None or reader.done():
            return
        await asyncio.wait((reader,), timeout=CLOSE_TIMEOUT)
        self.abort_reader()

    def abort_reader(self) -> None:
        """Make a reader blocked in :meth:`receive` return ``None``."""
        self._aborting = True
        reader = self._reader
        if reader is not None and not reader.done() and self._in_receive:
            reader.cancel()

    def disconnected(self, code: int | None) -> None:
        """The client closed or vanished: stop reading and clean up."""
        self._aborting = True
        self._finish(1005 if code is None else code, "client closed")

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the reading task itself: clean up, then send the close frame."""
        if self.closed:
            return
        self._aborting = True
        if self._corked is not None:
            self._uncork()
            if self.closed:
                return
        self._finish(code, reason)
        message = {"type": "websocket.close", "code": int(code), "reason": reason[:120]}
        try:
            await asyncio.wait_for(self._send(message), CLOSE_TIMEOUT)
        except Exception as exc:  # includes TimeoutError
            logger.debug("close of %s not sent: %r", self.id, exc)

    def _finish(self, code: int, reason: str) -> None:
        """The one cleanup path: runs exactly once, whichever way the connection ends."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for room in self._in_flight:  # what will never be sent is counted, never silent
            self._count_drop(room)
        self._in_flight = ()
        if self._corked is not None:
            self._count_drop(self._corked_room)
            for _, room in self._corked_extra or ():
                self._count_drop(room)
            self._corked = self._corked_extra = None
        for _, _, room in self._queue:
            self._count_drop(room)
        self._queue.clear()
        self._queued_bytes = 0
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self.manager.connection_closed(self, code, reason)

    # ----------------------------------------------------------------- inbound
    def bind_reader(self, task: asyncio.Task[Any] | None) -> None:
        """The task that reads this connection (aborted if a close is never answered)."""
        self._reader = task

    async def receive(self) -> str | bytes | None:
        """The next frame from the client, or ``None`` once the connection has ended."""
        if self._reader is None:
            self._reader = asyncio.current_task()
        while not self._aborting:
            message = await self._receive_event()
            if message is None:
                return None
            kind = message["type"]
            if kind == "websocket.disconnect":
                self.disconnected(message.get("code"))
                return None
            if kind != "websocket.receive" or self.closed:
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if self._accept_inbound(data):
                return data
        return None

    async def _receive_event(self) -> ASGIMessage | None:
        self._in_receive = True
        try:
            return await self._receive()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._aborting and task is not None:
                task.uncancel()
                self.disconnected(1006)
                return None
            raise
        except Exception as exc:  # uvicorn raises once the socket is gone
            logger.debug("receive on %s failed: %r", self.id, exc)
            self.disconnected(1006)
            return None
        finally:
            self._in_receive = False

    def _accept_inbound(self, data: str | bytes) -> bool:
        """Size and rate checks; counters. False if the frame was refused."""
        limit = self.manager.settings.max_message_bytes
        size = len(data)
        if isinstance(data, str) and size * 4 > limit and not data.isascii():
            size = len(data.encode())
        if size > limit:
            self.close(CloseCode.TOO_BIG, f"message larger than {limit} bytes")
            return False
        if self._bucket is not None and not self._bucket.allow():
            self.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
            return False
        self.messages_in += 1
        self.bytes_in += size
        self.counters.messages_in += 1
        self.counters.bytes_in += size
        return True

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            id=self.id,
            identity=self.identity_text,
            rooms=tuple(sorted(self.rooms)),
            remote=self.remote,
            user_agent=self.user_agent,
            connected_at=self.connected_at,
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            queue_depth=len(self._queue),
            dropped=self.dropped,
            node=self.manager.node_id,
        )


def _is_disconnect(exc: Exception) -> bool:
    return isinstance(exc, OSError) or type(exc).__name__ in (
        "ClientDisconnected", "WebSocketDisconnect", "ConnectionClosed", "RuntimeError")
