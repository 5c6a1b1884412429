"""Node-to-node commands: this node's control channel and what arrives on it.

Every node subscribes its own control channel (``{prefix}:ctl:{node}``). On it arrive
command requests from other nodes (``Q``: run through the handler, answered on the
requester's control channel), the replies to this node's own requests (``R``) and this
node's self-ping (``P``, handed to the supervisor). A command for a connection that lives
elsewhere goes to its owner, found in the cluster registry (:mod:`.rpc` waits for the reply).
A command for a user's connections goes to every other node listed in the registry at
once, and each answers with how many of the user's connections it has: one PUBLISH and one
reply per node, whatever the number of connections, and each node counts from its own
local truth (no per-user index to keep in Redis, nothing missed while the registry lags).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from wsplugin.backends.base import BrokerHandler, Command
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.rpc import Publish, Rpc

logger = logging.getLogger("wsplugin.redis")

OwnerOf = Callable[[str], Awaitable[str | None]]
"""The node that owns a connection id (None: no node has it)."""
OtherNodes = Callable[[], Awaitable[list[str]]]
"""The ids of the other nodes in the registry (a dead one's PUBLISH reaches nobody)."""

_FAILURES = (RedisError, OSError, TimeoutError)


class Controller:
    def __init__(
        self,
        node: Node,
        keys: Keys,
        publish: Publish,
        owner: OwnerOf,
        others: OtherNodes,
        on_pong: Callable[[], None],
        *,
        timeout: float = 2.0,
    ) -> None:
        self.node = node
        self.keys = keys
        self.owner = owner
        self.others = others
        self.on_pong = on_pong
        self.rpc = Rpc(node, publish, keys.control, timeout)
        self._handler: BrokerHandler | None = None

    @property
    def channel(self) -> str:
        """This node's control channel."""
        return self.keys.control(self.node.id)

    def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        await self.rpc.stop()

    async def command(self, command: Command) -> bool:
        """Run ``command`` on the node that owns its connection; False if none (or this one)."""
        try:
            async with asyncio.timeout(self.rpc.timeout):
                owner = await self.owner(command.connection_id)
        except _FAILURES as exc:
            logger.warning("registry lookup for %s failed: %r", command.connection_id, exc)
            return False
        if owner is None or owner == self.node.id:
            return False
        return bool(await self.rpc.call(owner, command))

    async def command_all(self, command: Command) -> int:
        """Run a user command on every other node at once; the sum of their counts (a node
        that does not answer within the timeout counts 0)."""
        try:
            async with asyncio.timeout(self.rpc.timeout):
                nodes = [node for node in await self.others() if node != self.node.id]
        except _FAILURES as exc:
            logger.warning("registry lookup for %s failed: %r", command.op, exc)
            return 0
        counts = await asyncio.gather(*(self.rpc.call(node, command) for node in nodes))
        return sum(counts)

    def on_message(self, data: bytes) -> None:
        """A payload on this node's control channel (WireError if it is none of ours)."""
        fields = wire.unpack(data)
        kind = fields[0] if fields else b""
        if kind == b"P":
            self.on_pong()
        elif kind == b"Q" and self._handler is not None:
            self.rpc.on_request(fields, self._handler)
        elif kind == b"R":
            self.rpc.on_reply(fields)
        else:
            raise wire.WireError(f"unknown control message {kind!r}")
