"""The background tasks of one part of the broker: spawned, tracked, stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

logger = logging.getLogger("wsplugin.redis")


class Tasks:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel every task and wait until they are all gone."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def quietly(call: Awaitable[None]) -> None:
    """Await a broker call; a failure is logged (the supervisor repairs, delivery goes on)."""
    try:
        await call
    except Exception as exc:
        logger.warning("wsplugin broker call failed: %r", exc)
