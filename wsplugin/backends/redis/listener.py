"""The one pub/sub connection of a process, supervised.

A single task owns the connection: it connects, subscribes every wanted channel, reads
messages and hands them to a callback. When the connection fails (Redis restarted, the
client was killed, the network broke) or a repair is requested (the self-ping says this
node went deaf), it drops the connection, waits with capped exponential backoff and
starts again: reconnect, resubscribe everything wanted, tell the owner (who re-registers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

logger = logging.getLogger("wsplugin.redis")

MessageCallback = Callable[[str, bytes], None]
ConnectedCallback = Callable[[int], Awaitable[None]]
SubscribedCallback = Callable[[str], None]


class Backoff:
    """Capped exponential backoff with jitter: 0, base, 2*base, ... up to ``cap`` seconds."""

    def __init__(self, base: float = 0.1, cap: float = 3.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        if self.failures == 1:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (self.failures - 2))
        return float(delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.failures = 0


class Listener:
    """Subscribes ``wanted`` channels on one pub/sub connection and keeps them subscribed."""

    def __init__(
        self,
        client: Redis,
        on_message: MessageCallback,
        on_connected: ConnectedCallback,
        *,
        backoff: Backoff | None = None,
        poll_interval: float = 0.5,
        on_subscribed: SubscribedCallback | None = None,
    ) -> None:
        self.client = client
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_subscribed = on_subscribed  # Redis confirmed a SUBSCRIBE: the channel is live
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self.wanted: set[str] = set()
        self.connects = 0  # successful (re)connections, the first one included
        self.failures = 0
        self.resubscribed = 0  # channels subscribed again after a reconnect (metrics)
        self.last_error = ""
        self._pubsub: PubSub | None = None  # set only while subscribed and reading
        self._repair = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    @property
    def pubsub(self) -> PubSub | None:
        return self._pubsub

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wsplugin-redis-listener")

    async def wait_ready(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        return self._ready.is_set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def repair(self) -> None:
        """Drop the connection and start again (the next read notices)."""
        self._repair = True

    async def add(self, channels: Iterable[str]) -> None:
        new = [c for c in channels if c not in self.wanted]
        self.wanted.update(new)
        await self._send("subscribe", new)

    async def discard(self, channels: Iterable[str]) -> None:
        gone = [c for c in channels if c in self.wanted]
        self.wanted.difference_update(gone)
        await self._send("unsubscribe", gone)

    async def _send(self, verb: str, channels: list[str]) -> None:
        pubsub = self._pubsub
        if not channels or pubsub is None:
            return  # not connected: the next (re)connection subscribes everything wanted
        try:
            await getattr(pubsub, verb)(*channels)
        except (RedisError, OSError) as exc:
            logger.debug("%s %s failed (the listener will recover): %r", verb, channels, exc)
            self.repair()

    async def _run(self) -> None:
        while not self._stopping:
            delay = self.backoff.next_delay()
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._note_failure(exc)
            except Exception as exc:  # never let the listener die
                logger.exception("wsplugin redis listener crashed; restarting")
                self._note_failure(exc)

    def _note_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = repr(exc)
        if self.backoff.failures <= 1 or self.backoff.failures % 10 == 0:
            logger.warning("redis pub/sub connection lost (%r); reconnecting", exc)

    async def _session(self) -> None:
        pubsub = self.client.pubsub()
        self._repair = False
        try:
            await self._subscribe_all(pubsub)
            self.backoff.reset()
            self.connects += 1
            self._ready.set()
            if self.connects > 1:
                self.resubscribed += len(self.wanted)
                logger.warning(
                    "redis pub/sub reconnected; %d channels resubscribed", len(self.wanted)
                )
            await self.on_connected(self.connects)
            await self._read(pubsub)
        finally:
            self._pubsub = None
            await _close(pubsub)

    async def _subscribe_all(self, pubsub: PubSub) -> None:
        sent = set(self.wanted)
        await pubsub.subscribe(*sent)
        self._pubsub = pubsub
        # wanted may have changed while SUBSCRIBE was in flight: settle the difference
        if missing := self.wanted - sent:
            await pubsub.subscribe(*missing)
        if extra := sent - self.wanted:
            await pubsub.unsubscribe(*extra)

    async def _read(self, pubsub: PubSub) -> None:
        while not self._stopping:
            if self._repair:
                logger.warning("redis pub/sub repair requested; reconnecting")
                return
            message: Any = await pubsub.get_message(
                ignore_subscribe_messages=False, timeout=self.poll_interval
            )
            if message is None:
                continue
            kind = message.get("type")
            if kind != "message" and not (kind == "subscribe" and self.on_subscribed):
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            if kind == "message":
                self.on_message(name, message["data"])
            elif self.on_subscribed is not None:
                self.on_subscribed(name)


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            close: Any = pubsub.aclose  # typed in some redis-py releases, not in others
            await close()
