"""The dashboard's routes, matched once when the app starts.

Recent FastAPI releases build an included router's routes (their parameter and response
models, their path patterns) the first time a request is matched against that router. In
a process holding 20,000 connections the first dashboard request then holds the event
loop for ~25 ms, and every connection waits. Matching one path of each admin router at
start-up does it before anyone waits: only matching (Starlette's ``route.matches``), no
request is run, so no endpoint, middleware or log sees anything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match, Mount

logger = logging.getLogger("wsplugin.admin")

WARM_PATHS = ("/login", "/api/me", "/api/stream")
"""One route of each admin router: the pages, the JSON API, the stream."""


@contextlib.asynccontextmanager
async def warmed(app: Starlette, path: str) -> AsyncIterator[None]:
    """A lifespan step: :func:`warm` the dashboard at ``path``, then run the app."""
    warm(app, path)
    yield


def warm(app: Starlette, path: str) -> int:
    """Match :data:`WARM_PATHS` under ``path`` against ``app``'s routes; returns how many
    matched (a failure is logged at DEBUG: the routes are then built on first use)."""
    matched = 0
    for tail in WARM_PATHS:
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path + tail,
                                 "root_path": "", "headers": [], "query_string": b""}
        try:
            matched += _match(app.router.routes, scope)
        except Exception as exc:
            logger.debug("wsplugin admin: matching %s%s failed: %r", path, tail, exc)
    return matched


def _match(routes: Sequence[BaseRoute], scope: dict[str, Any]) -> bool:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):  # a plain Starlette app: the dashboard's sub-app
            return _match(route.routes, {**scope, **child})
        return True
    return False
