"""``GET {admin_path}/api/stream``: Server-Sent Events, a snapshot then batched deltas."""

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sse_starlette import EventSourceResponse

from admin_ui import views
from admin_ui.auth import Principal
from admin_ui.context import AdminContext
from admin_ui.dependencies import PrincipalDependency, still_valid
from admin_ui.feed import Subscriber
from admin_ui.schemas import READ_ERRORS
from admin_ui.security import SecureRoute

LIFETIME = 600.0
"""A stream ends after this many seconds; the browser reconnects and gets a fresh snapshot."""
RETRY_MS = 2000


def encode(kind: str, payload: dict[str, Any], seq: int) -> dict[str, Any]:
    data = json.dumps(payload, default=str, separators=(",", ":"))
    return {"event": kind, "data": data, "id": str(seq), "retry": RETRY_MS}


def _drain(subscriber: Subscriber) -> None:
    while not subscriber.queue.empty():
        subscriber.queue.get_nowait()
    subscriber.stale = False


class SessionWatch:
    """Whether the session behind a stream has ended (logged out), asked at most every
    ``ctx.session_recheck`` seconds. Other kinds of principal never end."""

    def __init__(self, ctx: AdminContext, who: Principal | None) -> None:
        self.ctx = ctx
        self.who = who if who is not None and who.via == "session" else None
        self.checked = time.monotonic()

    def next_check(self) -> float:
        """Seconds until the session is due to be checked again (never, for no session)."""
        if self.who is None:
            return math.inf
        return max(0.0, self.checked + self.ctx.session_recheck - time.monotonic())

    async def ended(self) -> bool:
        if self.who is None or time.monotonic() - self.checked < self.ctx.session_recheck:
            return False
        self.checked = time.monotonic()
        return not await still_valid(self.ctx, self.who)


async def _next_delta(
    subscriber: Subscriber, watch: SessionWatch, deadline: float
) -> dict[str, Any] | None:
    """The next delta; None at the deadline or once the stream's session has ended."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        delta: dict[str, Any] | None = None
        try:
            wait = min(remaining, watch.next_check())
            delta = await asyncio.wait_for(subscriber.queue.get(), wait)
        except TimeoutError:
            pass
        if await watch.ended():
            return None
        if delta is not None:
            return delta


async def events(
    ctx: AdminContext,
    max_events: int | None,
    lifetime: float = LIFETIME,
    who: Principal | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """A snapshot, then deltas, until ``max_events``, the ``lifetime`` or the end of the
    session of ``who`` (a logout ends a stream that is open, too)."""
    subscriber = ctx.feed.subscribe()
    watch = SessionWatch(ctx, who)
    deadline = time.monotonic() + lifetime
    sent = 0
    try:
        while max_events is None or sent < max_events:
            if sent == 0 or subscriber.stale:
                _drain(subscriber)
                yield encode("snapshot", await views.snapshot(ctx), ctx.feed.seq)
            else:
                delta = await _next_delta(subscriber, watch, deadline)
                if delta is None:
                    return
                yield encode("delta", delta, ctx.feed.seq)
            sent += 1
    finally:
        ctx.feed.unsubscribe_stream(subscriber)


def stream_router(ctx: AdminContext, viewer: PrincipalDependency) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["wsplugin admin"], route_class=SecureRoute)

    @router.get(
        "/stream",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS},
    )
    async def stream(
        who: Annotated[Principal, Depends(viewer)],
        ping: float = Query(15.0, ge=0.5, le=300, description="Seconds between pings"),
        max_events: int | None = Query(None, ge=1, description="End after this many events"),
    ) -> EventSourceResponse:
        """Live updates: one ``snapshot`` event, then ``delta`` events (at most two a second,
        only what changed: totals, rates, new events and audit entries, and flags telling the
        page to re-fetch the table page it shows)."""
        headers = {"X-Accel-Buffering": "no"}
        source = events(ctx, max_events, who=who)
        return EventSourceResponse(source, ping=ping, headers=headers)

    return router
