"""Node-to-node commands: this node's control channel and what arrives on it.

Every node subscribes its own control channel (``{prefix}:ctl:{node}``). On it arrive
command requests from other nodes (``Q``: run through the handler, answered on the
requester's control channel), the replies to this node's own requests (``R``) and this
node's self-ping (``P``, handed to the supervisor). A command for a connection that lives
elsewhere goes to its owner, found in the cluster registry (:mod:`.rpc` waits for the reply).
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

_FAILURES = (RedisError, OSError, TimeoutError)


class Controller:
    def __init__(
        self,
        node: Node,
        keys: Keys,
        publish: Publish,
        owner: OwnerOf,
        on_pong: Callable[[], None],
        *,
        timeout: float = 2.0,
    ) -> None:
        self.node = node
        self.keys = keys
        self.owner = owner
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
        return await self.rpc.call(owner, command)

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
