"""History rooms on Redis: one atomic script per publish, ``XRANGE`` to read.

Per room, two keys sharing the Redis Cluster hash tag ``{room}``:

- ``{prefix}:hist:{room}:meta``: hash ``epoch``, ``offset`` (the top), kept ``meta_ttl``
  after the last publish; a room nobody published to (``offset`` 0) keeps it only
  :attr:`RedisHistory.empty_ttl` seconds after the last read, refreshed by the nodes that
  have members there;
- ``{prefix}:hist:{room}:stream``: a stream of the last ``size`` messages, entry id
  ``<offset>-0``, fields ``f`` (the frame) and ``x`` (excluded connection ids), kept ``ttl``
  after the last publish.

The publish script assigns the offset (``HINCRBY``), stores the message and PUBLISHes it on
the room channel in one step, so the order of a room's messages on pub/sub is their offset
order on every node. A lost ``meta`` (flushed, evicted, expired) is a new epoch, and the
stream of the old one is deleted with it.

Offsets are formatted as integers in Lua (``%d``): Lua's own number-to-string conversion
writes ``1e+14`` from 10**14 on, which is no stream id and no JSON integer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wsplugin.backends.base import BrokerError
from wsplugin.backends.history_store import Entry, HistoryStore, PublishDone, new_epoch
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.publisher import Publisher
from wsplugin.history import MAX_OFFSET, History, Position

# KEYS: meta, stream. ARGV: channel, frame head, wire head, size, ttl ms, meta ttl ms,
# new epoch, excluded ids.
PUBLISH_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[7]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'offset', 1))
local frame = ARGV[2] .. ',"offset":' .. offset .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'f', frame, 'x', ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[1], ARGV[3] .. epoch .. ' ' .. offset .. ' ' .. frame)
return {offset, epoch}
"""

# KEYS: meta, stream. ARGV: first offset to read (or '' for the newest), limit, new epoch,
# empty ttl ms (a room nobody published to keeps its position that long).
READ_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local top = redis.call('HGET', KEYS[1], 'offset') or '0'
if top == '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local limit = tonumber(ARGV[2])
local entries = {}
if limit > 0 then
  if ARGV[1] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', limit)
  end
end
return {epoch, top, entries}
"""

# KEYS: meta. ARGV: epoch, empty ttl ms. Keeps the position of a room nobody published to
# while a node has members there; never creates one (a lost one is a new epoch).
KEEP_LUA = """
if redis.call('HGET', KEYS[1], 'offset') == '0'
    and redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

KEEP_BATCH = 500

_FAILURES = (RedisError, OSError, TimeoutError)

logger = logging.getLogger("wsplugin.redis")


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisHistory(HistoryStore):
    """Publishes go through ``publisher`` (in the node's publish order), reads through
    ``client``; ``channels`` names the room channels, ``node`` the publishing node."""

    empty_ttl = 60.0
    """Seconds the position of a room nobody published to is kept after the last read, or
    after the last refresh by a node with members there (every quarter of it)."""

    def __init__(self, publisher: Publisher, client: Redis, channels: Keys, node: Node) -> None:
        self.publisher = publisher
        self.client = client
        self.channels = channels
        self.node = node
        self.prefix = channels.prefix
        self._publish_sha = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest()
        publisher.scripts.append(PUBLISH_LUA)
        self._read_script = client.register_script(READ_LUA)
        self._keep_script = client.register_script(KEEP_LUA)

    def keys(self, room: str) -> tuple[str, str]:
        base = f"{self.prefix}:hist:{{{room}}}"
        return f"{base}:meta", f"{base}:stream"

    def _publish_command(
        self, room: str, head: str, exclude: frozenset[str], spec: History
    ) -> tuple[Any, ...]:
        meta, stream = self.keys(room)
        return (
            "EVALSHA", self._publish_sha, 2, meta, stream, self.channels.room(room), head,
            wire.encode_stream_head(self.node.id, exclude), spec.size, _ms(spec.ttl),
            _ms(spec.meta_ttl), new_epoch(), ",".join(sorted(exclude)),
        )

    async def publish(
        self, room: str, head: str, exclude: frozenset[str], spec: History
    ) -> Position:
        result = await self.publisher.execute(
            self._publish_command(room, head, exclude, spec)
        )
        return _position(result)

    def publish_nowait(
        self, room: str, head: str, exclude: frozenset[str], spec: History, on_done: PublishDone
    ) -> None:
        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                on_done(None, error)
            else:
                on_done(_position(result), None)

        self.publisher.execute_nowait(
            self._publish_command(room, head, exclude, spec), done
        )

    async def read(
        self, room: str, since: int | None, limit: int, spec: History
    ) -> tuple[Position, list[Entry]]:
        first = "" if since is None else str(min(since, MAX_OFFSET) + 1)
        args: list[str | int] = [first, limit, new_epoch(), _ms(self.empty_ttl)]
        try:
            async with asyncio.timeout(self.publisher.timeout * 2):
                result = await self._read_script(keys=list(self.keys(room)), args=args)
        except _FAILURES as exc:
            raise BrokerError(f"redis history read failed: {exc!r}") from None
        epoch, top, raw = result
        entries = [_entry(item) for item in raw]
        if since is None:
            entries.reverse()
        return Position(_text(epoch), int(top)), entries

    # empty rooms with members ---------------------------------------------------------
    async def keep_loop(self) -> None:
        """Refresh the positions of the empty rooms this node has members in, forever."""
        while True:
            await asyncio.sleep(self.empty_ttl / 4)
            try:
                await self.keep_empty()
            except _FAILURES as exc:  # the next round tries again; a lost one is a reset
                logger.info("wsplugin: refreshing empty history rooms failed: %r", exc)
            except Exception:
                logger.exception("wsplugin: refreshing empty history rooms failed")

    async def keep_empty(self) -> None:
        positions = self.sink.empty_positions() if self.sink is not None else []
        ttl = _ms(self.empty_ttl)
        for start in range(0, len(positions), KEEP_BATCH):
            async with asyncio.timeout(self.publisher.timeout * 2):
                async with self.client.pipeline(transaction=False) as pipe:
                    for room, epoch in positions[start:start + KEEP_BATCH]:
                        args: list[str | int] = [epoch, ttl]
                        await self._keep_script(keys=[self.keys(room)[0]], args=args,
                                                client=pipe)
                    await pipe.execute()

    # from the broker's pub/sub ----------------------------------------------------------
    def on_payload(self, room: str, data: bytes) -> None:
        message = wire.decode_stream_message(data)
        if self.sink is not None:
            self.sink.on_stream_message(
                room, message.epoch, message.offset, message.frame, message.exclude
            )

    def on_subscribed(self, room: str) -> None:
        if self.sink is not None:
            self.sink.on_stream_subscribed(room)

    def on_unsubscribed(self, room: str) -> None:
        if self.sink is not None:
            self.sink.on_stream_unsubscribed(room)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _position(result: Any) -> Position:
    offset, epoch = result
    return Position(_text(epoch), int(offset))


def _entry(item: Any) -> Entry:
    entry_id, fields = item
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    offset = int(_text(entry_id).partition("-")[0])
    excluded = _text(values.get(b"x", b""))
    return offset, _text(values[b"f"]), frozenset(x for x in excluded.split(",") if x)
