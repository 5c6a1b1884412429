"""The reading side of one connection: the ASGI ``receive``, the task blocked in it, limits.

A close the client never answers must not leave its reader blocked forever: :meth:`abort`
makes a reader blocked in ``receive`` return instead (see :meth:`Inbound.read`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from wsplugin.protocol import CloseCode
from wsplugin.types import ASGIMessage, ASGIReceive

if TYPE_CHECKING:
    from wsplugin.config import Settings
    from wsplugin.counters import Counters

logger = logging.getLogger("wsplugin")


class Reader(Protocol):
    """What :meth:`Inbound.read` tells the connection it reads for."""

    @property
    def closed(self) -> bool: ...

    def disconnected(self, code: int | None) -> None:
        """The client closed or vanished."""

    def close(self, code: int, reason: str) -> None:
        """A frame broke a limit: close from the server side."""


GONE: ASGIMessage = {"type": "websocket.disconnect", "code": 1006}
"""What a read that failed or was aborted counts as: the socket is gone."""


class Inbound:
    """Reads one connection, checks each frame's size and rate, counts what it accepts."""

    __slots__ = ("_bucket", "_counters", "_in_receive", "_receive", "aborting", "bytes",
                 "max_bytes", "messages", "task")

    def __init__(self, receive: ASGIReceive, settings: Settings, counters: Counters) -> None:
        self._receive = receive
        self._counters = counters
        self.task: asyncio.Task[Any] | None = None
        self._in_receive = False
        self.aborting = False
        self.max_bytes = settings.max_message_bytes
        rate = settings.rate_limit
        self._bucket = TokenBucket(*rate) if rate is not None else None
        self.messages = self.bytes = 0

    async def read(self, reader: Reader) -> str | bytes | None:
        """The next accepted frame for ``reader`` (its connection), or ``None`` once the
        connection has ended (the client closed or vanished: ``reader.disconnected``; a
        frame broke a limit: ``reader.close``). One coroutine for all of it: an idle
        connection's reader waits in here, and every frame it keeps suspended is memory."""
        if self.task is None:
            self.task = asyncio.current_task()
        while not self.aborting:
            self._in_receive = True
            try:
                message: ASGIMessage = await self._receive()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self.aborting or task is None:
                    raise
                task.uncancel()
                message = GONE
            except Exception as exc:  # uvicorn raises once the socket is gone
                logger.debug("receive failed: %r", exc)
                message = GONE
            finally:
                self._in_receive = False
            kind = message["type"]
            if kind == "websocket.disconnect":
                reader.disconnected(message.get("code"))
                return None
            if kind != "websocket.receive" or reader.closed:
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            refusal = self.refusal(data)
            if refusal is None:
                return data
            reader.close(*refusal)
        return None

    def abort(self) -> None:
        """Make a reader blocked in :meth:`read` return ``None``."""
        self.aborting = True
        task = self.task
        if task is not None and not task.done() and self._in_receive:
            task.cancel()

    async def wait_answer(self, seconds: float) -> None:
        """Give the client ``seconds`` to answer a close, then stop reading.

        Returns at once when called by the reader itself (it stops reading on its own).
        """
        task = self.task
        if task is None or task.done() or task is asyncio.current_task():
            return
        await asyncio.wait((task,), timeout=seconds)
        self.abort()

    def refusal(self, data: str | bytes) -> tuple[int, str] | None:
        """Why a frame is refused (close code, reason), or ``None``: accepted and counted."""
        limit = self.max_bytes
        size = len(data)
        if isinstance(data, str) and size * 4 > limit and not data.isascii():
            size = len(data.encode())
        if size > limit:
            return CloseCode.TOO_BIG, f"message larger than {limit} bytes"
        if self._bucket is not None and not self._bucket.allow():
            return CloseCode.RATE_LIMITED, "rate limit exceeded"
        self.messages += 1
        self.bytes += size
        counters = self._counters
        counters.messages_in += 1
        counters.bytes_in += size
        return None


class TokenBucket:
    """Inbound rate: ``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
