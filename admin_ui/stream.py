"""``GET {admin_path}/api/stream``: Server-Sent Events, a snapshot then batched deltas."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query
from sse_starlette import EventSourceResponse

from admin_ui import views
from admin_ui.context import AdminContext
from admin_ui.dependencies import PrincipalDependency
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


async def events(
    ctx: AdminContext, max_events: int | None, lifetime: float = LIFETIME
) -> AsyncIterator[dict[str, Any]]:
    subscriber = ctx.feed.subscribe()
    deadline = time.monotonic() + lifetime
    sent = 0
    try:
        while max_events is None or sent < max_events:
            if sent == 0 or subscriber.stale:
                _drain(subscriber)
                yield encode("snapshot", await views.snapshot(ctx), ctx.feed.seq)
            else:
                remaining = deadline - time.monotonic()
                try:
                    delta = await asyncio.wait_for(subscriber.queue.get(), max(remaining, 0))
                except TimeoutError:
                    return
                yield encode("delta", delta, ctx.feed.seq)
            sent += 1
    finally:
        ctx.feed.unsubscribe_stream(subscriber)


def stream_router(ctx: AdminContext, viewer: PrincipalDependency) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["wsplugin admin"], route_class=SecureRoute)

    @router.get(
        "/stream",
        dependencies=[Depends(viewer)],
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS},
    )
    async def stream(
        ping: float = Query(15.0, ge=0.5, le=300, description="Seconds between pings"),
        max_events: int | None = Query(None, ge=1, description="End after this many events"),
    ) -> EventSourceResponse:
        """Live updates: one ``snapshot`` event, then ``delta`` events (at most two a second,
        only what changed: totals, rates, new events and audit entries, and flags telling the
        page to re-fetch the table page it shows)."""
        headers = {"X-Accel-Buffering": "no"}
        return EventSourceResponse(events(ctx, max_events), ping=ping, headers=headers)

    return router
