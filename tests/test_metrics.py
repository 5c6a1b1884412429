"""``/ws-metrics``: parsed with prometheus-client's own parser after real traffic.

A real uvicorn server, real websocket clients: connections accepted and refused, messages,
abrupt TCP resets, a kick, a slow consumer, a client over its rate limit. Every counter
must equal what the clients saw, every gauge what is connected; the gauges return to zero
once the clients are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.redis_server import RedisFactory
from tests.support import ThreadServer
from tests.test_connection import PAD, SNDBUF, stalled_client
from tests.ws_helpers import abort, make_app, on_server, open_client, send_json, serve, wait_until
from wsplugin import WebSocketManager, install_ws_manager
from wsplugin.config import build_settings
from wsplugin.counters import CLOSE_CODES
from wsplugin.metrics import register_collector
from wsplugin.protocol import reply

PATH = "/ws-metrics"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(server: ThreadServer, headers: dict[str, str] | None = None) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(server.url + PATH, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Received:
    """What one client read: frames and their bytes (everything, welcome included)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.kinds: dict[str, int] = {}
        self.connection_id = ""

    def add(self, raw: str | bytes) -> dict[str, Any]:
        text = raw if isinstance(raw, str) else raw.decode()
        self.frames += 1
        self.bytes += len(text.encode())
        frame: dict[str, Any] = json.loads(text)
        self.kinds[frame["type"]] = self.kinds.get(frame["type"], 0) + 1
        return frame


async def read_until_closed(ws: ClientConnection, seen: Received) -> int | None:
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(15):
            while True:
                seen.add(await ws.recv())
    return ws.close_code


async def client(server: ThreadServer, room: str, seen: Received) -> ClientConnection:
    ws = await connect(f"{server.ws_url}/ws/{room}", compression=None)
    welcome = seen.add(await ws.recv())
    assert welcome["type"] == "welcome"
    seen.connection_id = welcome["connection_id"]
    return ws


async def refused(url: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, **kwargs)
    assert info.value.response.status_code == 403


def authenticate(websocket: WebSocket) -> str | None:
    return None if websocket.query_params.get("token") == "bad" else "someone"


async def broadcast_until(manager: WebSocketManager, room: str, done: Any) -> int:
    """Broadcast ~1 KB messages to ``room`` until ``done()``; how many were offered."""
    offered = 0
    while not done():
        await manager.broadcast(room, {"seq": offered, "pad": PAD})
        offered += 1
    return offered


@pytest.mark.timeout(90)
async def test_every_metric_matches_the_traffic_and_gauges_return_to_zero() -> None:
    n_receivers, m_messages, k_resets, burst = 3, 20, 3, 30
    options: dict[str, Any] = {"metrics_path": PATH, "authenticate": authenticate,
                               "max_queue_messages": 5, "rate_limit": (burst, 0.01),
                               "client_publish": True}
    with serve(sndbuf=SNDBUF, **options) as (server, manager):
        before = await scrape(server)
        assert value(before, "wsplugin_connections") == 0
        assert value(before, "wsplugin_connections_accepted_total") == 0

        # refused before accept: a foreign origin, a bad room name, authentication (twice)
        await refused(f"{server.ws_url}/ws/a", origin="https://evil.example")
        await refused(f"{server.ws_url}/ws/bad%20room")
        for _ in range(2):
            await refused(f"{server.ws_url}/ws/a?token=bad")

        # traffic: one publisher and n receivers in "a", the publisher also in "b"
        seen = [Received() for _ in range(n_receivers + 1)]
        publisher, *receivers = [await client(server, "a", s) for s in seen]
        await send_json(publisher, {"type": "join", "room": "b", "id": 1})
        sent_bytes = len(json.dumps({"type": "join", "room": "b", "id": 1}))
        assert seen[0].add(await publisher.recv())["type"] == "joined"
        for seq in range(m_messages):
            frame = json.dumps({"type": "publish", "data": {"seq": seq}})
            await publisher.send(frame)
            sent_bytes += len(frame)
        for ws, s in zip([publisher, *receivers], seen, strict=True):
            while s.kinds.get("message", 0) < m_messages:
                s.add(await asyncio.wait_for(ws.recv(), 5))

        # k clients in "b" whose TCP connection is reset
        reset_seen = [Received() for _ in range(k_resets)]
        resets = [await client(server, "b", s) for s in reset_seen]
        during = await scrape(server)
        assert value(during, "wsplugin_connections") == 1 + n_receivers + k_resets
        assert value(during, "wsplugin_rooms") == 2
        assert value(during, "wsplugin_room_memberships") == 1 + n_receivers + k_resets + 1
        assert value(during, "wsplugin_connections_accepted_total") == 1 + n_receivers + k_resets
        for ws in resets:
            await abort(ws)
        await wait_until(lambda: on_server(server, asyncio.sleep(0, len(manager.hub.connections)
                                                                 == 1 + n_receivers)),
                         what="the reset connections to be cleaned up")

        # a kick
        kicked_ws = receivers[0]
        assert await on_server(server, manager.kick(seen[1].connection_id, reason="test"))

        # a slow consumer: first a backlog of 3 queued messages (gauges), then overflow (4008)
        slow, slow_id = await stalled_client(server, "s")
        slow_conn = manager.hub.connections[slow_id]
        offered = await on_server(server, broadcast_until(
            manager, "s", lambda: slow_conn.queue_depth >= 3), 30)
        backlog = await scrape(server)
        assert value(backlog, "wsplugin_queued_messages") == 3 == slow_conn.queue_depth
        assert value(backlog, "wsplugin_queued_bytes") == slow_conn.queued_bytes > 3000
        offered += await on_server(server, broadcast_until(manager, "s", lambda: slow_conn.closed))

        # a client over its rate limit: pings until it is closed 4029
        flood_seen = Received()
        flood = await client(server, "r", flood_seen)
        ping = json.dumps({"type": "ping"})
        with contextlib.suppress(ConnectionClosed):
            for _ in range(burst + 10):
                await flood.send(ping)

        # everybody reads to the end; the rest close normally (1000)
        slow_seen = Received()  # its welcome was read by stalled_client
        slow_seen.add(reply("welcome", connection_id=slow_id, rooms=["s"]))
        codes = {
            "kicked": await read_until_closed(kicked_ws, seen[1]),
            "slow": await read_until_closed(slow, slow_seen),
            "flood": await read_until_closed(flood, flood_seen),
        }
        for ws, s in zip([publisher, *receivers[1:]], [seen[0], *seen[2:]], strict=True):
            await ws.close()
            await read_until_closed(ws, s)
        assert codes == {"kicked": 4000, "slow": 4008, "flood": 4029}
        await wait_until(lambda: on_server(server, asyncio.sleep(0, not manager.hub.connections)),
                         what="every connection to be gone")
        after = await scrape(server)

    everyone = [*seen, *reset_seen, flood_seen, slow_seen]
    frames_out = sum(s.frames for s in everyone)
    bytes_out = sum(s.bytes for s in everyone)
    pongs = flood_seen.kinds.get("pong", 0)
    accepted = 1 + n_receivers + k_resets + 2
    expected = {
        "wsplugin_connections": 0, "wsplugin_rooms": 0, "wsplugin_room_memberships": 0,
        "wsplugin_queued_messages": 0, "wsplugin_queued_bytes": 0,
        "wsplugin_connections_accepted_total": accepted,
        "wsplugin_messages_in_total": 1 + m_messages + pongs,
        "wsplugin_bytes_in_total": sent_bytes + pongs * len(ping),
        "wsplugin_messages_out_total": frames_out,
        "wsplugin_bytes_out_total": bytes_out,
        "wsplugin_messages_dropped_total": offered - (slow_seen.frames - 1),
        "wsplugin_slow_consumer_closes_total": 1,
        "wsplugin_rate_limit_closes_total": 1,
        "wsplugin_publish_errors_total": 0,
        "wsplugin_broker_subscribed": 1,
        "wsplugin_nodes_alive": 1,
        "wsplugin_delivery_seconds_count": m_messages + offered,  # source="local"
    }
    got = {name: value(after, name) for name in expected if "delivery" not in name}
    got["wsplugin_delivery_seconds_count"] = value(
        after, "wsplugin_delivery_seconds_count", source="local")
    print(f"\nmetrics after traffic: {got}")
    assert got == expected
    assert pongs >= burst  # the bucket let the burst through before the close
    assert value(after, "wsplugin_messages_dropped_total") >= 1
    refused_by = {r: value(after, "wsplugin_connections_refused_total", reason=r)
                  for r in ("auth", "origin", "bad_room", "limit")}
    assert refused_by == {"auth": 2, "origin": 1, "bad_room": 1, "limit": 0}
    closes = {c: value(after, "wsplugin_connections_closed_total", code=c)
              for c in [*map(str, CLOSE_CODES), "other"]}
    # uvicorn reports a connection lost after the handshake as 1005 (no status received);
    # 1006 is what the connection records when its own send finds the socket gone
    assert {c: n for c, n in closes.items() if n} == {
        "1000": n_receivers, "1005": k_resets, "4000": 1, "4008": 1, "4029": 1}
    assert sum(closes.values()) == accepted
    assert value(after, "wsplugin_delivery_seconds_bucket", le="+Inf", source="local") == (
        m_messages + offered)
    assert value(after, "wsplugin_node_info", node=manager.node_id, backend="memory",
                 pid=str(os.getpid())) == 1



async def test_off_by_default() -> None:
    with serve() as (server, _):
        async with httpx.AsyncClient(timeout=5) as http:
            for path in (PATH, "/metrics"):
                assert (await http.get(server.url + path)).status_code == 404


async def test_a_token_protects_the_route() -> None:
    with serve(metrics_path=PATH, metrics_token="s3cret") as (server, _):
        async with httpx.AsyncClient(timeout=5) as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = await http.get(server.url + PATH, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
        samples = await scrape(server, {"Authorization": "Bearer s3cret"})
        assert value(samples, "wsplugin_connections") == 0


def test_settings_from_the_environment() -> None:
    env = {"WSPLUGIN_METRICS_PATH": "/m", "WSPLUGIN_METRICS_TOKEN": "t"}
    settings = build_settings({}, env)
    assert (settings.metrics_path, settings.metrics_token) == ("/m", "t")
    assert build_settings({}, {"WSPLUGIN_METRICS_PATH": "off"}).metrics_path is None
    assert build_settings({}, {}).metrics_path is None
    with pytest.raises(ValueError, match="metrics_path"):
        build_settings({"metrics_path": "metrics"}, {})
    with pytest.raises(ValueError, match="metrics_token"):
        build_settings({"metrics_token": ""}, {})


def test_a_clear_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    monkeypatch.delitem(sys.modules, "wsplugin.metrics")
    with pytest.raises(ImportError, match=r"pip install 'wsplugin\[metrics\]'"):
        install_ws_manager(FastAPI(), admin_path=None, metrics_path=PATH)
    install_ws_manager(FastAPI(), admin_path=None)  # off: prometheus-client is not needed


async def test_register_collector_in_the_apps_own_registry() -> None:
    app, manager = make_app(client_publish=True)
    registry = CollectorRegistry()
    register_collector(manager, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_collector(manager, registry)
    with ThreadServer(app) as server:
        ws, _ = await open_client(server, "lobby")
        await send_json(ws, {"type": "publish", "data": "hi"})
        await ws.recv()
        # an exporter renders in its own thread (prometheus-fastapi-instrumentator does);
        # the latency is observed just after the write that the client read: poll for it
        async def observed() -> bool:
            samples = parse(await asyncio.to_thread(_latest, registry))
            return value(samples, "wsplugin_delivery_seconds_count", source="local") == 1

        await wait_until(observed, 5, "the delivery latency to be observed")
        samples = parse(await asyncio.to_thread(_latest, registry))
        assert value(samples, "wsplugin_connections") == 1
        assert value(samples, "wsplugin_messages_in_total") == 1
        assert value(samples, "wsplugin_delivery_seconds_count", source="local") == 1
        await ws.close()


def _latest(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


@contextlib.contextmanager
def redis_nodes(url: str, prefix: str, count: int) -> Iterator[list[ThreadServer]]:
    servers = []
    try:
        for _ in range(count):
            app = FastAPI()
            install_ws_manager(app, backend=url, redis_prefix=prefix, admin_path=None,
                               metrics_path=PATH)
            servers.append(ThreadServer(app).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_redis_nodes_subscription_and_reconnects(redis_factory: RedisFactory) -> None:
    redis = redis_factory()
    with redis_nodes(redis.url, "wsplugin-test-metrics", 2) as (a, b):
        ws, _ = await open_client(b, "lobby")

        async def both_alive() -> bool:
            samples = await scrape(a)
            return value(samples, "wsplugin_nodes_alive") == 2 and sum(
                v for (name, _), v in samples.items() if name == "wsplugin_cluster_connections"
            ) == 1

        await wait_until(both_alive, what="two nodes and one connection in the registry")
        samples = await scrape(a)
        assert value(samples, "wsplugin_broker_subscribed") == 1
        assert 0 <= value(samples, "wsplugin_broker_self_ping_age_seconds") < 5
        assert value(samples, "wsplugin_broker_reconnects_total") == 0
        assert redis.client().client_kill_filter(_type="pubsub") >= 2

        async def resubscribed() -> bool:
            samples = await scrape(b)
            return value(samples, "wsplugin_broker_reconnects_total") >= 1

        await wait_until(resubscribed, 15, what="node b to reconnect")
        samples = await scrape(b)
        assert value(samples, "wsplugin_broker_subscribed") == 1
        # its control channel, the events channel, the broadcast-all channel and "lobby"
        assert value(samples, "wsplugin_broker_resubscribed_channels_total") >= 4
        await ws.close()
