"""Outgoing PUBLISHes, pipelined by one writer task on its own connection, failing fast.

Concurrent publishes queue up while the previous pipeline is in flight and go out together
in the next one: one round trip carries many messages, and messages leave a node in the
order they were published. Nothing is buffered without bound: beyond ``max_pending``
messages, or while the breaker is open after a failure, ``publish`` raises at once.

Script calls (a history room's publish) travel in the same pipeline, so they keep
their order with every other publish of the node; the scripts are loaded on each new
connection, so ``EVALSHA`` finds them after a Redis restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wsplugin.backends.base import BrokerError

_Item = tuple[tuple[Any, ...], asyncio.Future[Any]]


class Publisher:
    def __init__(
        self,
        client: Redis,
        *,
        timeout: float = 1.0,
        max_pending: int = 10_000,
        max_batch: int = 512,
        cooldown: float = 0.5,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.cooldown = cooldown
        self.published = 0
        self.errors = 0
        self.batches = 0
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._open_until = 0.0  # breaker: fail at once until this monotonic time
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # the writer's own connection, taken from the pool
        self.scripts: list[str] = []  # Lua sources loaded on every new connection

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wsplugin-redis-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail(self._pending, BrokerError("broker stopped"))
        self._pending = []
        await self._drop_connection()

    async def publish(self, channel: str, payload: bytes) -> int:
        """PUBLISH and return the number of subscribers that got it; BrokerError if not sent."""
        return int(await self.execute(("PUBLISH", channel, payload)))

    async def execute(self, command: tuple[Any, ...]) -> Any:
        """Run one command in the node's publish order; its reply, or BrokerError."""
        future = self._enqueue(command)
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await future  # a timeout cancels it: the writer then skips it
        except TimeoutError:
            raise BrokerError("redis publish timed out") from None

    def execute_nowait(
        self, command: tuple[Any, ...], on_done: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Queue one command; ``on_done(reply, error)`` hears how it ended."""
        future = self._enqueue(command)
        future.add_done_callback(lambda done: _finish(done, on_done))

    def publish_nowait(
        self, channel: str, payload: bytes, on_error: Callable[[BaseException], None]
    ) -> None:
        """Queue a PUBLISH without waiting for Redis; ``on_error`` hears of a later failure.

        Raises BrokerError at once, like :meth:`publish`, when the breaker is open or too
        many publishes wait. Order is kept with every other publish of this node.
        """
        future = self._enqueue(("PUBLISH", channel, payload))
        future.add_done_callback(lambda done: _report(done, on_error))

    def _enqueue(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self._task is None:
            raise BrokerError("redis broker is not running")
        if time.monotonic() < self._open_until:
            self.errors += 1
            raise BrokerError("redis unavailable (recent publish failed)")
        if len(self._pending) >= self.max_pending:
            self.errors += 1
            raise BrokerError("too many publishes in flight")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.max_batch],
                    self._pending[self.max_batch :],
                )
                await self._flush(batch)

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                counts = await self._send(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            await self._drop_connection()
            self._open_until = time.monotonic() + self.cooldown
            self._fail(batch, BrokerError(f"redis publish failed: {exc!r}"))
            self._fail(self._pending, BrokerError("redis unavailable"))
            self._pending = []
            return
        self.batches += 1
        self.published += len(batch)
        for (_, future), result in zip(batch, counts, strict=True):
            if not future.done():
                future.set_result(result)

    async def _send(self, batch: list[_Item]) -> list[Any]:
        """Send every item on the writer's own connection: one write, then the replies."""
        if self._conn is None:
            self._conn = await self.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            for script in self.scripts:
                await self._conn.send_command("SCRIPT", "LOAD", script)
                await self._conn.read_response()
        conn = self._conn
        packed = conn.pack_commands([command for command, _ in batch])
        await conn.send_packed_command(packed, check_health=False)
        replies = [await conn.read_response() for _ in batch]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            with contextlib.suppress(Exception):
                await self.client.connection_pool.release(conn)

    def _fail(self, items: list[_Item], error: BrokerError) -> None:
        for _, future in items:
            if not future.done():
                self.errors += 1
                future.set_exception(error)


def _finish(
    future: asyncio.Future[Any], on_done: Callable[[Any, BaseException | None], None]
) -> None:
    if future.cancelled():
        on_done(None, BrokerError("redis publish timed out"))
        return
    error = future.exception()
    on_done(None if error is not None else future.result(), error)


def _report(future: asyncio.Future[Any], on_error: Callable[[BaseException], None]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        on_error(error)
