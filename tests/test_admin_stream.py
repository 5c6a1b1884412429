"""The SSE stream: a snapshot, then batched deltas; the feed behind it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from admin_ui.audit import AuditLog
from admin_ui.feed import Feed
from admin_ui.rates import RateMeter
from tests.admin_helpers import ADMIN, OPERATOR, create_app, open_client, sse_events
from tests.support import ThreadServer
from wsplugin import WebSocketManager

STREAM = f"{ADMIN}/api/stream"


async def test_stream_needs_credentials() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get(STREAM)).status_code == 401


async def test_finite_stream_sends_a_snapshot() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get(STREAM, params={"max_events": 1}, headers=OPERATOR)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-frame-options"] == "DENY"
    assert "event: snapshot" in response.text
    assert "retry: 2000" in response.text


async def read_until(
    events: Any, predicate: Any, seconds: float = 10.0
) -> tuple[str, dict[str, Any]]:
    async def scan() -> tuple[str, dict[str, Any]]:
        async for kind, data in events:
            if predicate(kind, data):
                return kind, data
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(scan(), seconds)


@pytest.mark.timeout(60)
async def test_snapshot_then_delta_after_a_client_connects() -> None:
    app = create_app()
    with ThreadServer(app) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=10) as http,
            http.stream("GET", STREAM, params={"ping": 1}) as response,
        ):
            assert response.status_code == 200
            events = sse_events(response)
            kind, snapshot = await read_until(events, lambda k, d: True)
            assert kind == "snapshot"
            assert snapshot["totals"]["connections"] == 0
            assert snapshot["connections"] == {"total": 0, "offset": 0, "limit": 50, "items": []}
            assert {"rooms", "events", "audit", "rates", "health", "nodes", "seq"} <= set(snapshot)
            ws, conn_id = await open_client(server.ws_url, "lobby")
            try:
                kind, delta = await read_until(events, lambda k, d: "events" in d)
                assert kind == "delta"
                assert delta["connections"]["changed"] is True
                connected = [e for e in delta["events"] if e["kind"] == "connected"]
                assert connected[0]["connection_id"] == conn_id
                _, totals = await read_until(events, lambda k, d: "totals" in d)
                assert totals["totals"]["connections"] == 1
            finally:
                await ws.close()
            _, gone = await read_until(
                events, lambda k, d: any(e["kind"] == "disconnected" for e in d.get("events", []))
            )
            assert gone["events"][0]["connection_id"] == conn_id
        # After the stream closed, a new one starts with a fresh snapshot (what a browser
        # reconnect gets); the sampler stops when the last stream ends.
        async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=10) as http:
            again = await http.get(STREAM, params={"max_events": 1})
            assert "event: snapshot" in again.text
        ctx = app.state.wsplugin_admin
        assert ctx.feed.subscribers == 0


# -- the feed, without a server -------------------------------------------------------------


async def test_feed_batches_and_bounds_events() -> None:
    manager = WebSocketManager()
    feed = Feed(manager, AuditLog(), interval=3600, batch_events=10)
    subscriber = feed.subscribe()
    try:
        for n in range(25):
            manager.events.emit("connected", connection_id=f"c{n}")
        delta = await feed.sample()
        assert [e["connection_id"] for e in delta["events"]] == [f"c{n}" for n in range(24, 14, -1)]
        assert delta["events_skipped"] == 15
        assert delta["connections"]["changed"] is True
        quiet = await feed.sample()
        assert "events" not in quiet and "connections" not in quiet
        assert len(feed.events_newest(1000)) == 25
    finally:
        feed.unsubscribe_stream(subscriber)
        await feed.stop()
    manager.events.emit("connected", connection_id="late")
    assert feed.seq == 25  # unsubscribed from the bus


async def test_event_log_is_bounded() -> None:
    manager = WebSocketManager()
    feed = Feed(manager, AuditLog(), log_size=100)
    for n in range(1000):
        manager.events.emit("joined", connection_id=f"c{n}", room="r")
    newest = feed.events_newest(500)
    assert len(newest) == 100 and newest[0]["connection_id"] == "c999"
    await feed.stop()


async def test_a_full_subscriber_is_marked_stale() -> None:
    manager = WebSocketManager()
    feed = Feed(manager, AuditLog(), interval=3600)
    subscriber = feed.subscribe()
    for n in range(20):
        feed._publish({"n": n})
    assert subscriber.stale and subscriber.queue.full()
    feed.unsubscribe_stream(subscriber)
    assert feed._task is None
    await feed.stop()


def test_rate_meter() -> None:
    meter = RateMeter()
    assert meter.update({"a": 10}, 100.0) == {"a": 0.0}
    assert meter.update({"a": 30}, 102.0) == {"a": 10.0}
    assert meter.update({"a": 30, "b": 5}, 103.0) == {"a": 0.0, "b": 0.0}
    assert meter.update({"a": 20}, 104.0) == {"a": 0.0}  # a counter reset is not negative


async def test_sampler_runs_only_while_streams_are_open() -> None:
    manager = WebSocketManager()
    feed = Feed(manager, AuditLog(), interval=0.05)
    first, second = feed.subscribe(), feed.subscribe()
    manager.events.emit("connected", connection_id="x")
    delta = await asyncio.wait_for(first.queue.get(), 5)
    assert delta["events"][0]["connection_id"] == "x"
    assert (await asyncio.wait_for(second.queue.get(), 5)) is delta
    feed.unsubscribe_stream(first)
    assert feed._task is not None
    feed.unsubscribe_stream(second)
    assert feed._task is None
    await feed.stop()
