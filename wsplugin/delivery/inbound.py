"""The reading side of one connection: the ASGI ``receive``, the task blocked in it, limits.

A close the client never answers must not leave its reader blocked forever: :meth:`abort`
makes a reader blocked in ``receive`` return instead (see :meth:`Inbound.next_event`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from wsplugin.protocol import CloseCode
from wsplugin.types import ASGIMessage, ASGIReceive

if TYPE_CHECKING:
    from wsplugin.config import Settings
    from wsplugin.counters import Counters

logger = logging.getLogger("wsplugin")


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

    async def next_event(self) -> ASGIMessage | None:
        """The next ASGI event, or ``None`` if the socket is gone or the read was aborted."""
        if self.task is None:
            self.task = asyncio.current_task()
        self._in_receive = True
        try:
            return await self._receive()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.aborting and task is not None:
                task.uncancel()
                return None
            raise
        except Exception as exc:  # uvicorn raises once the socket is gone
            logger.debug("receive failed: %r", exc)
            return None
        finally:
            self._in_receive = False

    def abort(self) -> None:
        """Make a reader blocked in :meth:`next_event` return ``None``."""
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
