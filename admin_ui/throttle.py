"""Failed-login throttling, per client address and across all addresses (in memory).

Per address: ``attempts`` failures within ``window`` seconds lock the address for
``first_lock`` seconds; every further failure while that memory lasts doubles the lock, up
to ``max_lock``. The memory goes after ``forget_after`` quiet seconds, not after a success
(else the holder of a viewer token could wipe his failures between guesses at the operator
token).

Globally: ``global_failures`` failures within ``global_window`` seconds (any addresses)
start an *alert* of ``global_lock`` seconds, re-armed while failures go on. During an alert
an address with a recent failure is not even checked, and every failed attempt is answered
429 instead of 401: a botnet gets at most one guess per address and window, while a correct
credential from a clean address still passes (it is checked, in constant time, as always).

This state is one process's. With the Redis backend the dashboard counts in Redis instead,
for the whole cluster (``admin_ui.shared_throttle``, same rules and numbers); this one then
gives the limits and stands in while Redis is unreachable.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    attempts: int = 5
    window: float = 60.0
    first_lock: float = 1.0
    max_lock: float = 300.0
    forget_after: float = 900.0
    global_failures: int = 100
    global_window: float = 60.0
    global_lock: float = 30.0
    max_addresses: int = 10_000


@dataclass(slots=True)
class _Address:
    failures: deque[float] = field(default_factory=deque)
    level: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


def retry_header(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class Throttle:
    def __init__(
        self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._recent: deque[float] = deque(maxlen=self.limits.global_failures)
        self._alert_until = 0.0

    def retry_after(self, address: str) -> float:
        """Seconds before ``address`` may try a credential again (0: it may now)."""
        now = self._clock()
        state = self._state(address, now)
        if state is None:
            return 0.0
        wait = max(0.0, state.locked_until - now)
        if state.failures and self._alert_until > now:
            wait = max(wait, self._alert_until - now)
        return wait

    def failed(self, address: str) -> float:
        """Count a failure; returns the wait to announce (0: answer a plain 401)."""
        now = self._clock()
        state = self._state(address, now) or self._new(address)
        self._addresses.move_to_end(address)
        self._prune(state.failures, now, self.limits.window)
        state.failures.append(now)
        state.last_failure = now
        if state.level or len(state.failures) >= self.limits.attempts:
            state.level += 1
            lock = self.limits.first_lock * 2.0 ** min(state.level - 1, 64)
            state.locked_until = now + min(self.limits.max_lock, lock)
        self._count_globally(now)
        return max(state.locked_until - now, self.alert(), 0.0)

    def alert(self) -> float:
        """Seconds left of a global alert (0: none)."""
        return max(0.0, self._alert_until - self._clock())

    def locked(self, address: str) -> bool:
        state = self._addresses.get(address)
        return state is not None and state.locked_until > self._clock()

    def _count_globally(self, now: float) -> None:
        self._recent.append(now)
        full = len(self._recent) == self.limits.global_failures
        if full and now - self._recent[0] <= self.limits.global_window:
            self._alert_until = now + self.limits.global_lock

    def _state(self, address: str, now: float) -> _Address | None:
        state = self._addresses.get(address)
        if state is None:
            return None
        if now - state.last_failure > self.limits.forget_after and state.locked_until <= now:
            del self._addresses[address]
            return None
        self._prune(state.failures, now, self.limits.window)
        return state

    def _new(self, address: str) -> _Address:
        while len(self._addresses) >= self.limits.max_addresses:
            self._addresses.popitem(last=False)
        state = self._addresses[address] = _Address()
        return state

    @staticmethod
    def _prune(failures: deque[float], now: float, window: float) -> None:
        while failures and now - failures[0] > window:
            failures.popleft()
