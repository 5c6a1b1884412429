"""A JSON Web Key Set behind a URL: fetched in a thread, cached, fetched again for a new ``kid``.

PyJWT's ``PyJWKClient`` fetches with blocking I/O, so every fetch runs in one worker thread
of the key set (awaited through a ``concurrent.futures`` future, from any event loop), and
concurrent handshakes share the fetch in flight. A token whose ``kid`` is unknown fetches
the set again at most once every ``min_refresh`` seconds (a flood of made-up ``kid``\\ s
costs the identity provider nothing more); a set older than ``lifespan`` is fetched again
in the background while its keys keep serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jwt import PyJWK

logger = logging.getLogger("wsplugin")


class KeySet:
    """The signing keys published at ``url``, by ``kid``."""

    def __init__(self, url: str, *, lifespan: float, min_refresh: float, timeout: float) -> None:
        import jwt

        self.url = url
        self._client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=False,
                                       timeout=timeout)
        self._lifespan = lifespan
        self._min_refresh = min_refresh
        self._keys: dict[str | None, PyJWK] = {}
        self._loaded_at = -math.inf  # monotonic time of the last successful fetch
        self._started_at = -math.inf  # monotonic time the last fetch started
        self._inflight: concurrent.futures.Future[None] | None = None
        self._mutex = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key named ``kid`` (a set of one key also serves tokens without ``kid``);
        ``None`` when the set, fetched again if allowed, does not have it."""
        key = self._find(kid)
        if key is not None:
            if time.monotonic() - self._loaded_at > self._lifespan:
                self._fetch()  # in the background: the cached key serves meanwhile
            return key
        fetch = self._fetch()
        if fetch is not None:
            await asyncio.wrap_future(fetch)
        return self._find(kid)

    def _find(self, kid: str | None) -> PyJWK | None:
        keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def _fetch(self) -> concurrent.futures.Future[None] | None:
        """The fetch in flight, else a new one unless the last began under ``min_refresh``
        seconds ago (then ``None``)."""
        with self._mutex:
            if self._inflight is not None and not self._inflight.done():
                return self._inflight
            now = time.monotonic()
            if now - self._started_at < self._min_refresh:
                return None
            self._started_at = now
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="wsplugin-jwks")
            self._inflight = self._executor.submit(self._load)
            return self._inflight

    def _load(self) -> None:
        """In the worker thread: fetch and parse the set; a failure keeps the old keys."""
        import jwt

        try:
            data = self._client.fetch_data()
            keys = jwt.PyJWKSet.from_dict(data).keys
        except Exception as exc:  # network, HTTP, JSON or key errors: the old keys serve
            logger.warning("wsplugin: the key set at %s could not be fetched: %s",
                           self.url, type(exc).__name__)
            return
        self._keys = {key.key_id: key for key in keys
                      if getattr(key, "public_key_use", None) in (None, "sig")}
        self._loaded_at = time.monotonic()
