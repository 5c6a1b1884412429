"""Revoked sessions: logging out ends a session on the server, not only in the browser.

A revoked session is remembered by its id (``admin_ui.sessions.session_id``, a hash of its
nonce) until it would have expired anyway. The number remembered is bounded
(``capacity``): when a new revocation would exceed it, the entries that would expire
first are forgotten, and every session that expires no later than they would (so was
issued no later) is refused from then on: a *floor*. Running out of room therefore logs
out more sessions, never brings a revoked one back.

``MemoryRevocations`` is one process's; ``RedisRevocations`` is the whole cluster's (every
worker and node that shares the Redis): a sorted set ``{prefix}:admin:revoked`` (id ->
expiry) and a string ``{prefix}:admin:revoked-floor``, both expiring with their newest
entry. When Redis cannot answer, ``StoreUnavailable`` is raised: the caller refuses the
session (fail closed) rather than accept one that may have been revoked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from admin_ui.redis_state import FAILURES, RedisState, StoreUnavailable

CAPACITY = 10_000

REVOKE_LUA = """
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if expires > now then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end
local over = redis.call('ZCARD', KEYS[1]) - capacity
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[1], over)
  local top = gone[#gone]
  local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(top) > floor then
    redis.call('SET', KEYS[2], top, 'PX', math.max(1, math.ceil((tonumber(top) - now) * 1000)))
  end
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest > 0 then
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((tonumber(newest[2]) - now) * 1000)))
end
return redis.call('ZCARD', KEYS[1])
"""


class Revocations(Protocol):
    async def revoke(self, session: str, expires: float) -> None:
        """Refuse session ``session`` (expiring at unix time ``expires``) from now on."""

    async def revoked(self, session: str, expires: float) -> bool:
        """Whether that session was revoked (or fell under the floor)."""


class MemoryRevocations:
    """This process's revocations: ``capacity`` at most."""

    def __init__(self, capacity: int = CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self._clock = clock
        self._expiries: dict[str, float] = {}
        self.floor = 0.0

    def __len__(self) -> int:
        return len(self._expiries)

    async def revoke(self, session: str, expires: float) -> None:
        now = self._clock()
        self._expiries = {key: when for key, when in self._expiries.items() if when > now}
        if expires > now:
            self._expiries[session] = expires
        while len(self._expiries) > self.capacity:
            first = min(self._expiries, key=self._expiries.__getitem__)
            self.floor = max(self.floor, self._expiries.pop(first))

    async def revoked(self, session: str, expires: float) -> bool:
        return session in self._expiries or expires <= self.floor


class RedisRevocations:
    """The cluster's revocations, in the Redis of the broker."""

    def __init__(
        self, state: RedisState, capacity: int = CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.capacity = capacity
        self._clock = clock
        self._script = state.client.register_script(REVOKE_LUA)
        self.keys = [state.key("revoked"), state.key("revoked-floor")]

    async def revoke(self, session: str, expires: float) -> None:
        args: list[str | int] = [repr(self._clock()), session, repr(expires), self.capacity]
        try:
            async with asyncio.timeout(self.state.timeout):
                await self._script(keys=self.keys, args=args, client=self.state.client)
        except FAILURES as exc:
            self.state.warn("could not record a logout", exc)
            raise StoreUnavailable("the session store (Redis) is unreachable") from exc

    async def revoked(self, session: str, expires: float) -> bool:
        try:
            async with asyncio.timeout(self.state.timeout):
                async with self.state.client.pipeline(transaction=False) as pipe:
                    pipe.zscore(self.keys[0], session)
                    pipe.get(self.keys[1])
                    score, floor = await pipe.execute()
        except FAILURES as exc:
            self.state.warn("could not check a session", exc)
            raise StoreUnavailable("the session store (Redis) is unreachable") from exc
        return score is not None or (floor is not None and expires <= float(floor))
