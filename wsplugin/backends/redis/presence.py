"""Presence rooms on Redis: one script per change, keys of one room under its hash tag.

Per room ``R`` (all ``{prefix}:pres:{R}:*``, so Redis Cluster keeps them on one slot):

- ``conns``: hash, connection id -> ``<node>\\t<user>`` (empty user: anonymous)
- ``counts``: hash, user id -> connections, cluster-wide
- ``users``: hash, user id -> info (JSON): the users members were told about
- ``leaving``: sorted set, user id -> when their grace period ends (ms)
- ``nodes``: sorted set, node id -> until when the node vouches for its entries (ms)
- ``state``: hash, ``occupied``, ``vacate_at``, ``grace`` (ms)

and ``{prefix}:pres:due``, a sorted set of rooms -> when they need a sweep. Each node's
heartbeat moves its ``nodes`` entry forward; a node killed with ``kill -9`` stops, and the
first sweep after its entry lapsed (any node's, through ``due``) removes its connections:
their users leave after the grace period, once. Every key of a room expires a while after
the last node stopped refreshing it, so nothing is left behind for good.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wsplugin.backends.base import BrokerError
from wsplugin.backends.presence_store import Change, Info, PresenceStore, Snapshot
from wsplugin.backends.redis import wire
from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.node import Node
from wsplugin.backends.redis.publisher import Publisher
from wsplugin.presence import PresenceStats, UserPresence

_FAILURES = (RedisError, OSError, TimeoutError)

# KEYS: conns counts users leaving nodes state. ARGV: conn, node, user, info, node expiry,
# grace ms, keep ms.
ADD_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {0, 0} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\t' .. ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[2])
redis.call('HSET', KEYS[6], 'grace', ARGV[6])
redis.call('HDEL', KEYS[6], 'vacate_at')
local occupied = 0
if redis.call('HGET', KEYS[6], 'occupied') ~= '1' then
  redis.call('HSET', KEYS[6], 'occupied', '1')
  occupied = 1
end
local joined = 0
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  redis.call('ZREM', KEYS[4], ARGV[3])
  joined = redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4])
end
for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
return {occupied, joined}
"""

# The connection ``conn`` is gone; ``user`` of ``node`` loses one connection.
_DROP = """
local function drop(user, now, grace)
  if user ~= '' and redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    redis.call('ZADD', KEYS[4], now + grace, user)
  end
end
local function maybe_vacate(now, grace)
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[6], 'vacate_at', now + grace)
  end
end
"""

# ARGV: conn, now ms. Returns when a sweep may find something due (ms), or -1.
REMOVE_LUA = _DROP + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
local user = string.match(v, '\\t(.*)$')
local now = tonumber(ARGV[2])
local grace = tonumber(redis.call('HGET', KEYS[6], 'grace') or '0')
drop(user, now, grace)
maybe_vacate(now, grace)
if redis.call('ZCARD', KEYS[4]) > 0 or redis.call('HEXISTS', KEYS[6], 'vacate_at') == 1 then
  return now + grace
end
return -1
"""

# ARGV: now ms. Returns {leaves, vacated, next sweep ms or -1}.
SWEEP_LUA = _DROP + """
local now = tonumber(ARGV[1])
local grace = tonumber(redis.call('HGET', KEYS[6], 'grace') or '0')
local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
if #dead > 0 then
  local lapsed = {}
  for _, node in ipairs(dead) do lapsed[node] = true end
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local node, user = string.match(all[i + 1], '^(.-)\\t(.*)$')
    if lapsed[node] then
      redis.call('HDEL', KEYS[1], all[i])
      drop(user, now, grace)
    end
  end
  redis.call('ZREM', KEYS[5], unpack(dead))
  if redis.call('HLEN', KEYS[1]) == 0 and redis.call('HEXISTS', KEYS[6], 'vacate_at') == 0 then
    maybe_vacate(now, grace)
  end
end
local leaves = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)) do
  redis.call('ZREM', KEYS[4], user)
  if redis.call('HEXISTS', KEYS[2], user) == 0 then
    redis.call('HDEL', KEYS[3], user)
    table.insert(leaves, user)
  end
end
local vacated = 0
local at = redis.call('HGET', KEYS[6], 'vacate_at')
if at and tonumber(at) <= now and redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('HDEL', KEYS[6], 'vacate_at')
  if redis.call('HGET', KEYS[6], 'occupied') == '1' then
    redis.call('HSET', KEYS[6], 'occupied', '0')
    vacated = 1
  end
end
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('HLEN', KEYS[3]) == 0
    and redis.call('ZCARD', KEYS[4]) == 0 and redis.call('HGET', KEYS[6], 'occupied') ~= '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  return {leaves, vacated, -1}
end
local nxt = -1
local function sooner(score)
  if score and (nxt < 0 or tonumber(score) < nxt) then nxt = tonumber(score) end
end
sooner(redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2])
sooner(redis.call('HGET', KEYS[6], 'vacate_at') or nil)
sooner(redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')[2])
return {leaves, vacated, nxt}
"""

# ARGV: node, node expiry ms, keep ms. This node still has members in the room.
REFRESH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 1
"""

# ARGV: max users listed. Returns {users, connections, users hash or 0, counts hash}.
SNAPSHOT_LUA = """
local users = redis.call('HLEN', KEYS[3])
local conns = redis.call('HLEN', KEYS[1])
if users > tonumber(ARGV[1]) then return {users, conns, 0, 0} end
return {users, conns, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[2])}
"""

SWEEP_BATCH = 100
"""Most rooms one :meth:`RedisPresence.sweep_due` sweeps."""


class RedisPresence(PresenceStore):
    """Presence in Redis (see the module docstring); changes go out on the room channels."""

    def __init__(self, publisher: Publisher, client: Redis, channels: Keys, node: Node,
                 registry_ttl: float) -> None:
        self.publisher = publisher
        self.client = client
        self.channels = channels
        self.node = node
        self.prefix = channels.prefix
        self.due_key = f"{channels.prefix}:pres:due"
        self.vouch_ms = int(registry_ttl * 1000)
        self.keep_ms = int(registry_ttl * 4000)
        self._add = client.register_script(ADD_LUA)
        self._remove = client.register_script(REMOVE_LUA)
        self._sweep = client.register_script(SWEEP_LUA)
        self._refresh = client.register_script(REFRESH_LUA)
        self._snapshot = client.register_script(SNAPSHOT_LUA)

    def keys(self, room: str) -> list[str]:
        base = f"{self.prefix}:pres:{{{room}}}"
        return [f"{base}:{name}" for name in ("conns", "counts", "users", "leaving", "nodes",
                                               "state")]

    async def _run(self, script: Any, room: str, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self.publisher.timeout * 2):
                return await script(keys=self.keys(room), args=list(args))
        except _FAILURES as exc:
            raise BrokerError(f"redis presence update failed: {exc!r}") from None

    async def add(self, room: str, conn_id: str, user: str | None, info: Info,
                  grace: float) -> Change:
        now = _now_ms()
        info_json = "" if info is None else json.dumps(info, separators=(",", ":"))
        occupied, joined = await self._run(
            self._add, room, conn_id, self.node.id, user or "", info_json,
            now + self.vouch_ms, int(grace * 1000), self.keep_ms + int(grace * 1000))
        await self._schedule(room, now + self.vouch_ms, lower=True)
        change = Change(room, occupied=bool(occupied))
        if joined and user is not None:
            change.joins[user] = info
        return change

    async def remove(self, room: str, conn_id: str) -> float | None:
        now = _now_ms()
        due = int(await self._run(self._remove, room, conn_id, now))
        if due < 0:
            return None
        await self._schedule(room, due, lower=True)
        return max(0.0, (due - now) / 1000)

    async def sweep(self, room: str) -> Change:
        leaves, vacated, following = await self._run(self._sweep, room, _now_ms())
        await self._reschedule(room, int(following))
        return Change(room, leaves=[_text(u) for u in leaves], vacated=bool(vacated))

    async def _reschedule(self, room: str, when: int) -> None:
        """The room's next sweep, from its whole state just now (-1: nothing left)."""
        try:
            if when < 0:
                await self.client.zrem(self.due_key, room)
            else:
                await self.client.zadd(self.due_key, {room: when})
        except _FAILURES as exc:
            raise BrokerError(f"redis presence schedule failed: {exc!r}") from None

    async def sweep_due(self) -> list[Change]:
        try:
            rooms = await self.client.zrangebyscore(self.due_key, "-inf", _now_ms(),
                                                    start=0, num=SWEEP_BATCH)
        except _FAILURES as exc:
            raise BrokerError(f"redis presence sweep failed: {exc!r}") from None
        changes = []
        for raw in rooms:
            room = _text(raw)
            if await self.client.zrem(self.due_key, room):  # this node claimed it
                changes.append(await self.sweep(room))
        return changes

    async def refresh(self, rooms: Iterable[str]) -> None:
        expiry = _now_ms() + self.vouch_ms
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    await self._refresh(keys=self.keys(room),
                                        args=[self.node.id, expiry, self.keep_ms], client=pipe)
                    pipe.zadd(self.due_key, {room: expiry}, lt=True)
                await pipe.execute()
        except _FAILURES as exc:
            raise BrokerError(f"redis presence refresh failed: {exc!r}") from None

    async def snapshot(self, room: str, max_list: int) -> Snapshot:
        users, conns, listed, counts = await self._run(self._snapshot, room, max_list)
        stats = PresenceStats(int(users), int(conns))
        if not listed:
            return Snapshot(None if users else {}, stats)
        connections = {_text(k): int(v) for k, v in _pairs(counts)}
        return Snapshot({
            user: UserPresence(connections.get(user, 0), _info(raw))
            for user, raw in ((_text(k), v) for k, v in _pairs(listed))
        }, stats)

    async def stats(self, room: str) -> PresenceStats:
        return (await self.snapshot(room, -1)).stats

    def announce(self, change: Change) -> None:
        payload = json.dumps({"j": change.joins, "l": change.leaves}, separators=(",", ":"))
        self.publisher.publish_nowait(
            self.channels.room(change.room), wire.encode_presence(payload.encode()), _ignore)

    def on_payload(self, room: str, data: bytes) -> None:
        """A change announced by any node, from the room's channel."""
        body = json.loads(wire.decode_presence(data))
        if self.sink is not None:
            self.sink.on_presence(Change(room, joins=dict(body["j"]), leaves=list(body["l"])))

    async def _schedule(self, room: str, when: int, *, lower: bool) -> None:
        """A sweep of ``room`` at ``when`` at the latest (``lower``: keep an earlier one)."""
        try:
            await self.client.zadd(self.due_key, {room: when}, lt=lower)
        except _FAILURES as exc:
            raise BrokerError(f"redis presence schedule failed: {exc!r}") from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Any) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _info(raw: Any) -> Info:
    text = _text(raw)
    if not text:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _ignore(exc: BaseException) -> None:
    """A lost presence diff is not retried (at most once, like every live frame)."""
