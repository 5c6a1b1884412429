"""The broker proper: room messages out and in, and the room channels this node listens to.

A room message is encoded once, by the publishing node, and PUBLISHed on its room channel
(``{prefix}:room:{room}``); a node subscribes the channel of each room with a local member
and ``*`` (``broadcast_all``). A node's own messages come back from Redis and are skipped
before decoding (they were delivered locally). History rooms (:mod:`.history`) publish
through a script on the same channels; their messages are handed to the history store in
offset order, own echoes included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wsplugin.backends.base import ALL_ROOMS, BrokerHandler
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.history import RedisHistory
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.listener import Listener
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.presence import RedisPresence
from wsplugin.backends.redis.publisher import Publisher
from wsplugin.backends.redis.tasks import Tasks, quietly
from wsplugin.types import Frame


class RoomChannels:
    def __init__(
        self,
        node: Node,
        keys: Keys,
        publisher: Publisher,
        listener: Listener,
        history: RedisHistory,
        presence: RedisPresence,
    ) -> None:
        self.node = node
        self.keys = keys
        self.publisher = publisher
        self.listener = listener
        self.history = history
        self.presence = presence
        self.received = 0
        self.delivered = 0
        self.own_echoes = 0
        self.tasks = Tasks()
        self._handler: BrokerHandler | None = None
        self._rooms: set[str] = set()  # rooms subscribed for their local members
        self._lock = asyncio.Lock()

    def start(self, handler: BrokerHandler) -> list[str]:
        """The room channels to subscribe: ``*`` and the rooms with local members. Starts
        the refresh of empty history rooms' positions."""
        self._handler = handler
        self.tasks.spawn(self.history.keep_loop())
        self._rooms = set(handler.local_rooms())
        return [self.keys.room(ALL_ROOMS), *(self.keys.room(r) for r in self._rooms)]

    async def stop(self) -> None:
        await self.tasks.stop()

    # out -----------------------------------------------------------------------------------

    async def publish(self, room: str, frame: Frame, exclude: frozenset[str]) -> None:
        await self.publisher.publish(
            self.keys.room(room), wire.encode_room_message(self.node.id, frame, exclude)
        )

    def publish_nowait(
        self,
        room: str,
        frame: Frame,
        exclude: frozenset[str],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.publisher.publish_nowait(
            self.keys.room(room), wire.encode_room_message(self.node.id, frame, exclude), on_error
        )

    # subscriptions -------------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        await self.listener.add([self.keys.room(room)])

    async def unsubscribe(self, room: str) -> None:
        if room != ALL_ROOMS:
            await self.listener.discard([self.keys.room(room)])
            self.history.on_unsubscribed(room)

    def sync_soon(self) -> None:
        self.tasks.spawn(self.sync())

    async def sync(self) -> None:
        """Subscribe the rooms that gained local members, unsubscribe those left empty."""
        async with self._lock:
            wanted = set(self._handler.local_rooms()) if self._handler is not None else set()
            for room in sorted(wanted - self._rooms):
                await quietly(self.subscribe(room))
                self._rooms.add(room)
            for room in sorted(self._rooms - wanted):
                await quietly(self.unsubscribe(room))
                self._rooms.discard(room)

    def on_subscribed(self, channel: str) -> None:
        room = self.keys.room_of(channel)
        if room is not None and room != ALL_ROOMS:
            self.history.on_subscribed(room)  # live (again): look for missed messages

    # in ------------------------------------------------------------------------------------

    def on_message(self, room: str, data: bytes) -> None:
        if wire.is_presence_message(data):  # own changes too: every node batches them
            self.presence.on_payload(room, data)
            return
        if wire.is_stream_message(data):  # a history room: in offset order, own echoes too
            self.received += 1
            self.history.on_payload(room, data)
            return
        if wire.room_message_node(data) == self.node.id_bytes:
            self.own_echoes += 1
            return
        message = wire.decode_room_message(data)
        self.received += 1
        if self._handler is not None:
            self.delivered += self._handler.deliver_remote(room, message.frame, message.exclude)
