"""End-of-iteration writes: the connections to flush once the current loop iteration ends.

A fast-path writer corks the frames of one iteration, and a coalescing connection joins
its queued messages into one frame; both ask to be flushed, and every such connection is
flushed in one ``call_soon`` callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what waited for the end of the iteration."""


class FlushQueue:
    """The connections waiting for the end of this loop iteration (one callback for all)."""

    __slots__ = ("_queue", "on_flushed")

    def __init__(self, on_flushed: Callable[[], None] | None = None) -> None:
        self._queue: list[Flushable] = []
        self.on_flushed = on_flushed

    def __bool__(self) -> bool:
        """True while a flush is scheduled (frames of this iteration are still held)."""
        return bool(self._queue)

    def schedule(self, conn: Flushable) -> None:
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append(conn)

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for conn in queue:
            conn.flush()
        if self.on_flushed is not None:
            self.on_flushed()
