"""Faults with real processes: Redis killed and restarted, a worker killed, a deaf node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.redis_server import RedisFactory
from tests.test_redis_cluster import (
    Worker,
    api,
    client,
    cluster_env,
    eventually,
    messages_until,
    next_of,
    registered,
    start_cluster,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def prefix() -> str:
    return f"wsplugin-test-faults-{uuid.uuid4().hex[:8]}"


async def health(worker: Worker) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        report: dict[str, Any] = (await http.get(f"{worker.http}/ws-health")).json()
        return report


async def is_ok(worker: Worker) -> bool:
    return bool((await health(worker))["status"] == "ok")


async def crosses(origin: Worker, ws: ClientConnection, room: str) -> bool:
    """Announce a fresh probe on ``origin``; True if ``ws`` (on another worker) receives it."""
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    await api("POST", f"{origin.http}/announce/{room}", probe)
    try:
        async with asyncio.timeout(0.5):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "message" and frame["data"] == probe:
                    return True
    except TimeoutError:
        return False


@pytest.mark.timeout(90)
async def test_redis_killed_mid_stream_and_restarted(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    env = cluster_env(server.url, prefix(), WSPLUGIN_REGISTRY_TTL="3")
    with start_cluster(2, env) as (a, b):
        ws_a1, id_a1 = await client(a, "one")
        ws_a2, _ = await client(a, "two")
        ws_b, _ = await client(b, "one")
        await eventually(lambda: registered(b, {id_a1}))
        for i in range(20):  # mid-stream
            await api("POST", f"{b.http}/announce/one", i)
        assert await messages_until(ws_a1, 19) == list(range(20))
        assert await messages_until(ws_b, 19) == list(range(20))

        server.kill()
        await eventually(lambda: _degraded(a))
        # local delivery goes on; the failed publish is counted, not buffered
        await api("POST", f"{b.http}/announce/one", "local only")
        assert (await next_of(ws_b, "message"))["data"] == "local only"
        assert (await api("GET", f"{b.http}/stats"))["publish_errors"] >= 1
        # a client's own publish is not held back either, and its failure is counted too
        before = (await api("GET", f"{b.http}/stats"))["publish_errors"]
        await ws_b.send(json.dumps({"type": "publish", "data": "client while down"}))
        assert (await next_of(ws_b, "message"))["data"] == "client while down"
        await eventually(lambda: _publish_errors_above(b, before))

        server.restart()
        await eventually(lambda: _all_ok(a, b), limit=15)
        await eventually(lambda: crosses(b, ws_a1, "one"), limit=10)
        await eventually(lambda: crosses(b, ws_a2, "two"), limit=10)  # every room resubscribed
        await eventually(lambda: crosses(a, ws_b, "one"), limit=10)
        await eventually(lambda: registered(b, {id_a1}), limit=10)  # re-registered
        for worker in (a, b):  # nothing crashed
            os.kill(worker.pid, 0)
            assert (await health(worker))["reconnects"] >= 1
        await ws_a1.send(json.dumps({"type": "ping", "id": 1}))
        assert (await next_of(ws_a1, "pong"))["id"] == 1
        for ws in (ws_a1, ws_a2, ws_b):
            await ws.close()


async def _publish_errors_above(worker: Worker, count: int) -> bool:
    return bool((await api("GET", f"{worker.http}/stats"))["publish_errors"] > count)


async def _degraded(worker: Worker) -> bool:
    return bool((await health(worker))["status"] == "degraded")


async def _all_ok(*workers: Worker) -> bool:
    return all([await is_ok(worker) for worker in workers])


@pytest.mark.timeout(60)
async def test_killed_worker_connections_expire_from_the_registry(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    ttl = 3.0
    env = cluster_env(server.url, prefix(), WSPLUGIN_REGISTRY_TTL=str(ttl))
    with start_cluster(2, env) as (a, b):
        clients = [await client(a, "doomed"), await client(a, "doomed")]
        ids = {conn_id for _, conn_id in clients}
        await eventually(lambda: registered(b, ids))
        assert len(await api("GET", f"{b.http}/nodes")) == 2
        os.kill(a.pid, signal.SIGKILL)
        took = await eventually(lambda: _no_ghosts(b, ids), limit=ttl + 5)
        assert took <= ttl + 5
        assert (await api("GET", f"{b.http}/rooms")).get("doomed", 0) == 0
        assert len(await api("GET", f"{b.http}/nodes")) == 1


async def _no_ghosts(worker: Worker, ids: set[str]) -> bool:
    listed = {c["id"] for c in await api("GET", f"{worker.http}/connections")}
    return not (ids & listed)


@pytest.mark.timeout(60)
async def test_node_notices_killed_subscription_and_repairs(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    with start_cluster(2, cluster_env(server.url, prefix())) as (a, b):
        ws_a, id_a = await client(a, "live")
        await eventually(lambda: registered(b, {id_a}))
        assert server.client().client_kill_filter(_type="pubsub") >= 2
        await eventually(lambda: _reconnected(a), limit=10)
        await eventually(lambda: _all_ok(a, b), limit=10)
        await eventually(lambda: crosses(b, ws_a, "live"), limit=10)
        await ws_a.close()


async def _reconnected(worker: Worker) -> bool:
    return bool((await health(worker))["reconnects"] >= 1)
