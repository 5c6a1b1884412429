"""Brokers, chosen by URL scheme and imported lazily (the Redis driver is an optional extra)."""

from __future__ import annotations

from typing import Any

from wsplugin.backends.base import Broker, BrokerError, BrokerHandler, Command
from wsplugin.backends.memory import MemoryBroker

__all__ = ["Broker", "BrokerError", "BrokerHandler", "Command", "MemoryBroker", "create_broker"]


def create_broker(url: str, **options: Any) -> Broker:
    """Build the broker for ``url``: ``memory://`` or ``redis://host:port/db``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryBroker(url)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from wsplugin.backends.redis import RedisBroker
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "backend=redis:// needs the redis extra: pip install 'wsplugin[redis]'"
            ) from exc
        return RedisBroker(url, **options)
    raise ValueError(f"unknown backend {url!r}: use 'memory://' or 'redis://host:port/db'")
