"""The cluster registry in Redis: nodes, their connections and their room counts.

Per node, three keys that expire together (``registry_ttl``) unless the node's heartbeat
refreshes them: ``node:{id}`` (a hash of facts), ``conns:{id}`` (connection id -> JSON) and
``rooms:{id}`` (room -> member count). A node killed with ``kill -9`` stops refreshing, so
its entries and its ghost connections vanish within the TTL. The ``nodes`` sorted set
lists node ids for enumeration; ids whose ``node:`` hash expired are pruned on read.
Per connection the cost is one hash field; per heartbeat, one MULTI rewriting the node's
keys from the authoritative local snapshot (so counters and drift are corrected).

With ``max_connections_per_user``, each user with a claimed connection also has
``user:{user id}``: a sorted set of the user's connection ids on every node, each scored by
when its claim expires (Redis time in ms). A claim is checked and added by one script (two
handshakes cannot both take the last slot), removed when its connection closes, and
pushed ``registry_ttl`` ahead by the heartbeat of the node that holds it, in the same
MULTI; the claims of a node killed with ``kill -9`` stop counting within ``registry_ttl``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from wsplugin.backends.redis.keys import Keys
from wsplugin.backends.redis.node import Node
from wsplugin.info import ConnectionInfo

RedisClient = Redis


def encode_info(info: ConnectionInfo, node: str) -> bytes:
    data = info.to_dict()
    data["node"] = node
    return json.dumps(data, separators=(",", ":")).encode()


def decode_info(raw: bytes) -> ConnectionInfo | None:
    try:
        data = json.loads(raw)
        return ConnectionInfo.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


# KEYS: the user's set. ARGV: connection id, limit, ttl ms. 1: claimed (or already held).
CLAIM_LUA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: user sets. ARGV: ttl ms, then the connection id held in each key, in order.
REFRESH_LUA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS
"""

REFRESH_BATCH = 500
"""Claims refreshed by one script call (a heartbeat makes as many calls as it needs)."""


def room_counts(infos: Iterable[ConnectionInfo]) -> Counter[str]:
    return Counter(room for info in infos for room in info.rooms)


def decode_node(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    stats: Any = _json_or(fields.get("stats", "{}"), {})
    broker: Any = _json_or(fields.get("broker", "{}"), {})
    return {
        "id": fields.get("id", ""),
        "host": fields.get("host", ""),
        "pid": int(fields.get("pid", "0") or 0),
        "started": float(fields.get("started", "0") or 0),
        "last_heartbeat": float(fields.get("last_heartbeat", "0") or 0),
        "connections": int(fields.get("connections", "0") or 0),
        "stats": stats if isinstance(stats, dict) else {},
        "broker": broker if isinstance(broker, dict) else {},
    }


def _fields(mapping: Mapping[str, Any]) -> dict[Any, Any]:
    return dict(mapping)


def _decoded(raw: Any) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]


def _json_or(text: str, default: Any) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return default


class Registry:
    """Reads and writes of the registry; every write is one MULTI/EXEC round trip."""

    def __init__(self, client: RedisClient, keys: Keys, node: Node, ttl: float) -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self.ttl_ms = max(1000, int(ttl * 1000))
        self._claim = client.register_script(CLAIM_LUA)
        self._refresh = client.register_script(REFRESH_LUA)

    async def claim_user(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Add a claim to the user's set unless it holds ``limit`` live claims already."""
        args: list[str | int] = [connection_id, limit, self.ttl_ms]
        return bool(int(await self._claim(keys=[self.keys.user(user_id)], args=args)))

    async def write_snapshot(
        self, infos: list[ConnectionInfo], meta: Mapping[str, str],
        claims: Mapping[str, str] | None = None,
    ) -> None:
        """Rewrite this node's keys from the local truth and refresh their expiry, and push
        back the expiry of this node's ``claims`` (connection id -> user id)."""
        me = self.node.id
        conns, rooms, node = self.keys.conns(me), self.keys.rooms(me), self.keys.node(me)
        counts = room_counts(infos)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(conns, rooms)
            if infos:
                pipe.hset(conns, mapping=_fields({i.id: encode_info(i, me) for i in infos}))
                pipe.pexpire(conns, self.ttl_ms)
            if counts:
                pipe.hset(rooms, mapping=_fields(counts))
                pipe.pexpire(rooms, self.ttl_ms)
            pipe.hset(node, mapping=_fields(meta))
            pipe.pexpire(node, self.ttl_ms)
            pipe.zadd(self.keys.nodes, {me: time.time()})
            await self._refresh_claims(pipe, claims or {})
            await pipe.execute()

    async def _refresh_claims(self, pipe: Any, claims: Mapping[str, str]) -> None:
        pairs = list(claims.items())
        for start in range(0, len(pairs), REFRESH_BATCH):
            batch = pairs[start : start + REFRESH_BATCH]
            keys = [self.keys.user(user_id) for _, user_id in batch]
            await self._refresh(keys=keys, args=[self.ttl_ms, *(c for c, _ in batch)],
                                client=pipe)

    async def put(self, info: ConnectionInfo, added: Iterable[str], removed: Iterable[str]) -> None:
        """Record one connection (new, or its rooms changed)."""
        me = self.node.id
        conns, rooms = self.keys.conns(me), self.keys.rooms(me)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(conns, info.id, encode_info(info, me))
            self._bump(pipe, rooms, added, 1)
            self._bump(pipe, rooms, removed, -1)
            pipe.pexpire(conns, self.ttl_ms)
            pipe.pexpire(rooms, self.ttl_ms)
            await pipe.execute()

    async def delete(
        self, connection_id: str, rooms: Iterable[str], user_id: str | None = None
    ) -> None:
        """Forget one connection of this node (and its claim in ``user_id``'s set)."""
        me = self.node.id
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.conns(me), connection_id)
            self._bump(pipe, self.keys.rooms(me), rooms, -1)
            if user_id is not None:
                pipe.zrem(self.keys.user(user_id), connection_id)
            await pipe.execute()

    @staticmethod
    def _bump(pipe: Any, key: str, rooms: Iterable[str], by: int) -> None:
        for room in rooms:
            pipe.hincrby(key, room, by)

    async def remove_node(self, claims: Mapping[str, str] | None = None) -> None:
        """Clean shutdown: this node's keys and ``claims`` (connection id -> user id) go at
        once instead of expiring."""
        me = self.node.id
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.node(me), self.keys.conns(me), self.keys.rooms(me))
            pipe.zrem(self.keys.nodes, me)
            for connection_id, user_id in (claims or {}).items():
                pipe.zrem(self.keys.user(user_id), connection_id)
            await pipe.execute()

    async def live_nodes(self) -> list[dict[str, Any]]:
        """Every node whose ``node:`` hash has not expired (pruning the others)."""
        ids = _decoded(await self.client.zrange(self.keys.nodes, 0, -1))
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for node in ids:
                pipe.hgetall(self.keys.node(node))
            metas: list[Mapping[bytes, bytes]] = await pipe.execute()
        dead = [node for node, meta in zip(ids, metas, strict=True) if not meta]
        if dead:
            await self.client.zrem(self.keys.nodes, *dead)
        return [
            decode_node(meta) | {"id": node} for node, meta in zip(ids, metas, strict=True) if meta
        ]

    async def other_node_ids(self) -> list[str]:
        ids = _decoded(await self.client.zrange(self.keys.nodes, 0, -1))
        return [node for node in ids if node != self.node.id]

    async def owner(self, connection_id: str) -> str | None:
        """The node whose connection hash holds ``connection_id`` (one round trip per call)."""
        ids = _decoded(await self.client.zrange(self.keys.nodes, 0, -1))
        if not ids:
            return None
        async with self.client.pipeline(transaction=False) as pipe:
            for node in ids:
                pipe.hexists(self.keys.conns(node), connection_id)
            found: list[Any] = await pipe.execute()
        return next((node for node, hit in zip(ids, found, strict=True) if hit), None)

    async def connections(self, nodes: list[str]) -> list[ConnectionInfo]:
        if not nodes:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self.keys.conns(node))
            tables: list[Mapping[bytes, bytes]] = await pipe.execute()
        infos = (decode_info(raw) for table in tables for raw in table.values())
        return [info for info in infos if info is not None]

    async def rooms(self, nodes: list[str]) -> dict[str, int]:
        if not nodes:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self.keys.rooms(node))
            tables: list[Mapping[bytes, bytes]] = await pipe.execute()
        total: Counter[str] = Counter()
        for table in tables:
            for room, count in table.items():
                total[room.decode()] += int(count)
        return {room: n for room, n in total.items() if n > 0}
