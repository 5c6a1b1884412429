"""Commands aimed at one connection, routed to the node that owns it.

The requester publishes a request on the owner's control channel and waits (``timeout``)
for the reply on its own control channel; the owner runs it through its handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from wsplugin.backends.base import BrokerError, BrokerHandler, Command
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.node import Node

logger = logging.getLogger("wsplugin.redis")

Publish = Callable[[str, bytes], Awaitable[int]]
ChannelOf = Callable[[str], str]


class Rpc:
    def __init__(
        self, node: Node, publish: Publish, control: ChannelOf, timeout: float = 2.0
    ) -> None:
        self.node = node
        self.publish = publish
        self.control = control
        self.timeout = timeout
        self.timeouts = 0
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, owner: str, command: Command) -> bool:
        """Run ``command`` on ``owner``; False if it is not there or does not answer in time."""
        request_id = str(next(self._ids))
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            receivers = await self.publish(
                self.control(owner), wire.encode_request(self.node.id, request_id, command)
            )
            if receivers == 0:
                return False  # the owner is not listening (gone, or reconnecting)
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            self.timeouts += 1
            logger.warning(
                "node %s did not answer %s for %s", owner, command.op, command.connection_id
            )
            return False
        except BrokerError as exc:
            logger.warning("cannot route %s for %s: %s", command.op, command.connection_id, exc)
            return False
        finally:
            self._waiting.pop(request_id, None)

    def on_reply(self, fields: list[bytes]) -> None:
        request_id, found = wire.decode_reply(fields)
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(found)

    def on_request(self, fields: list[bytes], handler: BrokerHandler) -> None:
        request = wire.decode_request(fields)
        task = asyncio.create_task(self._serve(request, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: wire.Request, handler: BrokerHandler) -> None:
        try:
            found = await handler.run_command(request.command)
        except Exception:
            logger.exception("command %s failed", request.command.op)
            found = False
        try:
            await self.publish(
                self.control(request.reply_to), wire.encode_reply(request.request_id, found)
            )
        except BrokerError as exc:
            logger.warning("cannot reply to %s: %s", request.reply_to, exc)

    async def stop(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_result(False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
