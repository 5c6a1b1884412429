"""Commands for another node: aimed at one connection (sent to the node that owns it) or
at one user's connections (sent to every node).

The requester publishes a request on the node's control channel and waits (``timeout``)
for the reply on its own control channel; the node runs it through its handler and answers
with a count (1 or 0 for one connection).
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
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, owner: str, command: Command) -> int:
        """Run ``command`` on ``owner``: its count, 0 if it is not there or does not answer
        in time."""
        request_id = str(next(self._ids))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            receivers = await self.publish(
                self.control(owner), wire.encode_request(self.node.id, request_id, command)
            )
            if receivers == 0:
                return 0  # the owner is not listening (gone, or reconnecting)
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            self.timeouts += 1
            logger.warning("node %s did not answer %s for %s", owner, command.op, _target(command))
            return 0
        except BrokerError as exc:
            logger.warning("cannot route %s for %s: %s", command.op, _target(command), exc)
            return 0
        finally:
            self._waiting.pop(request_id, None)

    def on_reply(self, fields: list[bytes]) -> None:
        request_id, count = wire.decode_reply(fields)
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(count)

    def on_request(self, fields: list[bytes], handler: BrokerHandler) -> None:
        request = wire.decode_request(fields)
        task = asyncio.create_task(self._serve(request, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: wire.Request, handler: BrokerHandler) -> None:
        try:
            count = int(await handler.run_command(request.command))
        except Exception:
            logger.exception("command %s failed", request.command.op)
            count = 0
        try:
            await self.publish(
                self.control(request.reply_to), wire.encode_reply(request.request_id, count)
            )
        except BrokerError as exc:
            logger.warning("cannot reply to %s: %s", request.reply_to, exc)

    async def stop(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_result(0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _target(command: Command) -> str:
    """What a command is aimed at, for a log line (never the user id: it may be personal)."""
    return "a user's connections" if command.user is not None else command.connection_id
