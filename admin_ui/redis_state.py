"""The Redis the dashboard shares with the manager: the Redis broker's client and prefix.

With ``backend=redis://`` every worker and node of the app talks to one Redis; the
dashboard keeps its cluster-wide state there (revoked sessions, failed logins) under
``{prefix}:admin:``. With any other broker there is none, and that state is per process.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from wsplugin.backends.redis import RedisBroker

logger = logging.getLogger("wsplugin.admin")


def _failures() -> tuple[type[BaseException], ...]:
    try:  # the redis driver is an optional extra; without it there is no Redis broker
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - depends on the environment
        return (OSError, TimeoutError)
    return (RedisError, OSError, TimeoutError)


FAILURES = _failures()
"""What a call to an unreachable or failing Redis raises."""


class StoreUnavailable(Exception):
    """The shared state could not be read or written (Redis unreachable)."""


def redis_broker(manager: Any) -> RedisBroker | None:
    """The manager's broker when it is the Redis broker, else None."""
    broker = getattr(manager, "broker", None)
    if getattr(broker, "scheme", None) != "redis" or not hasattr(broker, "client"):
        return None
    return broker


class RedisState:
    """Key names and the broker's current client (looked up per call, never cached)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.timeout = 2 * float(getattr(broker.publisher, "timeout", 1.0))
        self._warned = 0.0

    @property
    def client(self) -> Redis:
        return self.broker.client

    def key(self, name: str) -> str:
        return f"{self.broker.keys.prefix}:admin:{name}"

    def warn(self, what: str, exc: BaseException) -> None:
        """One WARNING a minute at most while Redis keeps failing (an outage is not news
        on every request)."""
        now = time.monotonic()
        if now - self._warned >= 60.0 or not self._warned:
            self._warned = now
            logger.warning("wsplugin admin: %s: Redis failed (%s)", what, type(exc).__name__)
