"""The failed-login throttle of ``admin_ui.throttle``, counted cluster-wide in Redis.

The same rules and numbers (the local ``Throttle``'s ``limits``), kept in the broker's Redis
so that every worker and node counts the same failures: 4 free guesses per address for the
whole cluster, not per process. Two Lua scripts do the bookkeeping atomically:

- ``{prefix}:admin:throttle:addresses``: a hash, address -> JSON state (recent failure
  times, lock level, locked until, last failure);
- ``{prefix}:admin:throttle:seen``: a sorted set, address -> last failure, to forget quiet
  addresses and to drop the least recently failing beyond ``max_addresses``;
- ``{prefix}:admin:throttle:recent``: a list of the last ``global_failures`` failure times;
- ``{prefix}:admin:throttle:alert``: the end of a global alert.

Every key expires on its own once the failures stop. Times are unix times from each
process's clock (``time.time``). When Redis fails, the process falls back to its own
``Throttle`` (per-process counting) until Redis answers again, and says so once a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from admin_ui.redis_state import FAILURES, RedisState
from admin_ui.throttle import Throttle

LOAD_LUA = """
local function load(name, now, forget)
  local raw = redis.call('HGET', KEYS[1], name)
  if not raw then return nil end
  local state = cjson.decode(raw)
  if now - state.t > forget and state.u <= now then return nil end
  return state
end
"""

RETRY_AFTER_LUA = LOAD_LUA + """
local now, address = tonumber(ARGV[1]), ARGV[2]
local window, forget = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = load(address, now, forget)
if not state then
  redis.call('HDEL', KEYS[1], address)
  redis.call('ZREM', KEYS[2], address)
  return '0'
end
local wait = math.max(0, state.u - now)
local recent = false
for _, failure in ipairs(state.f) do
  if now - failure <= window then recent = true end
end
local alert = tonumber(redis.call('GET', KEYS[3]) or '0')
if recent and alert > now then wait = math.max(wait, alert - now) end
return string.format('%.17g', wait)
"""

FAILED_LUA = LOAD_LUA + """
local now, address = tonumber(ARGV[1]), ARGV[2]
local attempts, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local first_lock, max_lock, forget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local global_failures, global_window = tonumber(ARGV[8]), tonumber(ARGV[9])
local global_lock, max_addresses = tonumber(ARGV[10]), tonumber(ARGV[11])

local quiet = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - forget, 'LIMIT', 0, 64)
for _, name in ipairs(quiet) do
  if name ~= address and not load(name, now, forget) then
    redis.call('HDEL', KEYS[1], name)
    redis.call('ZREM', KEYS[2], name)
  end
end

local state = load(address, now, forget) or {f = {}, l = 0, u = 0, t = 0}
local kept = {}
for _, failure in ipairs(state.f) do
  if now - failure <= window then kept[#kept + 1] = failure end
end
kept[#kept + 1] = now
while #kept > attempts do table.remove(kept, 1) end
state.f, state.t = kept, now
if state.l > 0 or #kept >= attempts then
  state.l = state.l + 1
  state.u = now + math.min(max_lock, first_lock * 2 ^ math.min(state.l - 1, 64))
end
redis.call('HSET', KEYS[1], address, cjson.encode(state))
redis.call('ZADD', KEYS[2], ARGV[1], address)
local over = redis.call('ZCARD', KEYS[2]) - max_addresses
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('HDEL', KEYS[1], gone[i]) end
end

redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, global_failures - 1)
if redis.call('LLEN', KEYS[3]) >= global_failures then
  local oldest = tonumber(redis.call('LINDEX', KEYS[3], -1))
  if now - oldest <= global_window then
    local until_ = string.format('%.17g', now + global_lock)
    redis.call('SET', KEYS[4], until_, 'PX', math.max(1, math.ceil(global_lock * 1000)))
  end
end

local keep = math.max(1, math.ceil((forget + max_lock) * 1000))
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[3], math.max(1, math.ceil(global_window * 1000)))
local alert = tonumber(redis.call('GET', KEYS[4]) or '0')
return string.format('%.17g', math.max(state.u - now, alert - now, 0))
"""


class SharedThrottle:
    """``retry_after`` and ``failed`` of a ``Throttle``, counted in Redis; ``local`` gives the
    limits and stands in while Redis fails."""

    def __init__(self, state: RedisState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._retry_after = state.client.register_script(RETRY_AFTER_LUA)
        self._failed = state.client.register_script(FAILED_LUA)
        names = ("addresses", "seen", "recent", "alert")
        self.keys = [state.key("throttle:" + name) for name in names]

    async def retry_after(self, local: Throttle, address: str) -> float:
        limits = local.limits
        keys = [self.keys[0], self.keys[1], self.keys[3]]
        args = [repr(self.clock()), address, limits.window, limits.forget_after]
        try:
            return await self._run(self._retry_after, keys, args)
        except FAILURES as exc:
            self.state.warn("login throttle counted per process", exc)
            return local.retry_after(address)

    async def failed(self, local: Throttle, address: str) -> float:
        limits = local.limits
        args = [
            repr(self.clock()), address, limits.attempts, limits.window, limits.first_lock,
            limits.max_lock, limits.forget_after, limits.global_failures, limits.global_window,
            limits.global_lock, limits.max_addresses,
        ]
        try:
            return await self._run(self._failed, self.keys, args)
        except FAILURES as exc:
            self.state.warn("login throttle counted per process", exc)
            return local.failed(address)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> float:
        async with asyncio.timeout(self.state.timeout):
            result = await script(keys=keys, args=args, client=self.state.client)
        return float(result)
