"""Prometheus metrics (the optional extra ``wsplugin[metrics]``, prometheus-client).

Nothing here is incremented by hand for gauges: :class:`WSCollector` reads the manager's
live registry (the hub, the connections' queues, the broker) each time it is scraped.
Counters come from fields the manager keeps anyway (:class:`~wsplugin.counters.Counters`,
:class:`~wsplugin.counters.Tally`, the broker's own counters).

Two ways in: ``install_ws_manager(app, metrics_path="/ws-metrics")`` mounts a route with
its own registry, or :func:`register_collector` adds the collector to a registry you
already expose (``prometheus_client.REGISTRY`` by default).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised by test_metrics via a stub
    raise ImportError(
        "wsplugin metrics need prometheus-client: pip install 'wsplugin[metrics]'"
    ) from exc

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from wsplugin.counters import DeliveryLatency, Histogram

if TYPE_CHECKING:
    from wsplugin.manager import WebSocketManager

logger = logging.getLogger("wsplugin")

NODES_MAX_AGE = 5.0
"""Seconds a cluster read (nodes alive) is reused before the next scrape refreshes it."""


class WSCollector(Collector):
    """Computes every wsplugin metric at scrape time from ``manager``.

    ``collect`` may run outside the event loop (an exporter's thread): it only copies
    dicts (atomic under the GIL) and reads integers, it never awaits.
    """

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager
        self._nodes: list[dict[str, Any]] = []
        self._nodes_read = 0.0
        self._health: dict[str, Any] = {}
        self._refreshing = False

    async def refresh(self) -> None:
        """Read what needs an await (the cluster's live nodes, the broker's health)."""
        self._nodes = await self.manager.nodes()
        self._health = dict(await self.manager.health())
        self._nodes_read = time.monotonic()

    def describe(self) -> Iterator[Metric]:
        """The same families (so a registry refuses a second wsplugin collector)."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        self._refresh_soon()
        yield from self._gauges()
        yield from self._counters()
        yield from self._broker()
        yield from self._latency()
        yield from self._recoveries()

    # -- gauges, from the live registry ----------------------------------------------

    def _gauges(self) -> Iterator[Metric]:
        hub = self.manager.hub
        conns = tuple(hub.connections.values())
        rooms = tuple(hub.rooms.values())
        yield InfoMetricFamily("wsplugin_node", "This process: its node id and backend.", {
            "node": self.manager.node_id, "backend": _scheme(self.manager.settings.backend),
            "pid": str(os.getpid())})
        yield _gauge("wsplugin_connections", "Open websocket connections on this node.",
                     len(conns))
        yield _gauge("wsplugin_rooms", "Rooms with at least one member on this node.",
                     len(rooms))
        yield _gauge("wsplugin_room_memberships",
                     "Room memberships (subscriptions) of this node's connections.",
                     sum(len(room.members) for room in rooms))
        yield _gauge("wsplugin_queued_messages",
                     "Messages waiting in outbound queues on this node.",
                     sum(conn.queue_depth for conn in conns))
        yield _gauge("wsplugin_queued_bytes", "Bytes waiting in outbound queues on this node.",
                     sum(conn.queued_bytes for conn in conns))
        yield _gauge("wsplugin_users_online",
                     "Distinct users with a connection on this node.",
                     len({conn.user_id for conn in conns} - {None}))
        tracker = self.manager.tracker
        yield _gauge("wsplugin_presence_rooms", "Presence rooms with a member on this node.",
                     sum(1 for room in rooms if tracker.spec(room.name) is not None))

    # -- counters that exist already, and the lifecycle tally -------------------------

    def _counters(self) -> Iterator[Metric]:
        c = self.manager.counters
        tally = self.manager.tally
        yield _counter("wsplugin_connections_accepted",
                       "Websocket connections accepted (managed endpoint and connect()).",
                       tally.accepted)
        yield _labelled("wsplugin_connections_refused",
                        "Handshakes refused before accept, by reason.", "reason",
                        dict(tally.refused))
        yield _labelled("wsplugin_connections_closed",
                        "Connections ended, by close code ('other': any undocumented code).",
                        "code", dict(tally.closes))
        for name, doc, value in (
            ("wsplugin_messages_in", "Frames received from clients.", c.messages_in),
            ("wsplugin_messages_out", "Messages written to clients.", c.messages_out),
            ("wsplugin_bytes_in", "Bytes received from clients.", c.bytes_in),
            ("wsplugin_bytes_out", "Bytes written to clients.", c.bytes_out),
            ("wsplugin_messages_dropped",
             "Messages never written (queue overflow, connection gone).", c.dropped),
            ("wsplugin_slow_consumer_closes", "Connections closed 4008 (too slow).",
             c.slow_closes),
            ("wsplugin_rate_limit_closes", "Connections closed 4029 (rate limit).",
             tally.closes["4029"]),
            ("wsplugin_publish_errors", "Publishes to other nodes that failed.",
             c.publish_errors),
            ("wsplugin_presence_diffs", "presence_diff frames sent to members.",
             c.presence_diffs),
        ):
            yield _counter(name, doc, value)

    # -- the broker: subscribed, self-ping, nodes, reconnects -------------------------

    def _broker(self) -> Iterator[Metric]:
        health = self._sync_health()
        age = health.get("last_self_ping_age")
        yield _gauge("wsplugin_broker_subscribed",
                     "1 if this node's pub/sub subscription is up (always 1 in memory).",
                     1 if health.get("subscribed") else 0)
        yield _gauge("wsplugin_broker_self_ping_age_seconds",
                     "Seconds since this node last heard its own self-ping (NaN: never).",
                     float("nan") if age is None else float(age))
        yield _gauge("wsplugin_nodes_alive",
                     "Live nodes in the cluster, this one included (as of the last scrape).",
                     max(1, len(self._nodes)))
        cluster = GaugeMetricFamily("wsplugin_cluster_connections",
                                    "Connections per live node, from the cluster registry.",
                                    labels=["node"])
        for node in self._nodes or [{"id": self.manager.node_id,
                                     "connections": len(self.manager.hub.connections)}]:
            cluster.add_metric([str(node.get("id"))], float(node.get("connections") or 0))
        yield cluster
        stats = _broker_stats(self.manager.broker)
        for name, doc, key in (
            ("wsplugin_broker_reconnects", "Pub/sub reconnections after a failure.",
             "reconnects"),
            ("wsplugin_broker_deaf_repairs",
             "Reconnections because no self-ping came back (a silently lost subscription).",
             "deaf_repairs"),
            ("wsplugin_broker_resubscribed_channels",
             "Channels subscribed again after reconnections.", "resubscribed_channels"),
        ):
            yield _counter(name, doc, int(stats.get(key, 0)))

    def _sync_health(self) -> dict[str, Any]:
        """The broker's health without awaiting (both brokers compute it synchronously)."""
        coro = self.manager.broker.health()
        try:
            coro.send(None)
        except StopIteration as done:
            return dict(done.value)
        except Exception as exc:
            logger.debug("wsplugin metrics: broker health failed: %r", exc)
            return self._health
        coro.close()  # it wanted to wait: use the value of the last refresh
        return self._health

    def _latency(self) -> Iterator[Metric]:
        latency = self.manager.tally.latency
        family = HistogramMetricFamily(
            "wsplugin_delivery_seconds",
            "From a publish (source=local) or its arrival from another node (source=remote) "
            "to its last local write.", labels=["source"])
        if latency is not None:
            for source, histogram in (("local", latency.local), ("remote", latency.remote)):
                family.add_metric([source], *_histogram(histogram))
        yield family

    def _recoveries(self) -> Iterator[Metric]:
        tally = self.manager.tally.recoveries
        yield _labelled("wsplugin_recoveries",
                        "History recoveries by outcome: recovered (every missed message "
                        "sent), not_recovered (recovered: false), reset (a reset after "
                        "recovered: true).", "outcome", dict(tally.outcomes))
        for name, doc, histogram in (
            ("wsplugin_recovery_messages", "Messages replayed per history recovery.",
             tally.messages),
            ("wsplugin_recovery_seconds",
             "From the join to the hand-over to live delivery, per history recovery.",
             tally.seconds),
        ):
            family = HistogramMetricFamily(name, doc, labels=[])
            family.add_metric([], *_histogram(histogram))
            yield family

    # -- keeping the cluster read fresh for exporters that do not call refresh --------

    def _refresh_soon(self) -> None:
        if self._refreshing or time.monotonic() - self._nodes_read < NODES_MAX_AGE:
            return
        loop = _manager_loop(self.manager)
        if loop is None or loop.is_closed():
            return
        self._refreshing = True
        try:
            loop.call_soon_threadsafe(self._spawn_refresh)
        except RuntimeError:  # the loop closed meanwhile
            self._refreshing = False

    def _spawn_refresh(self) -> None:
        task = asyncio.get_running_loop().create_task(self._background_refresh())
        self.manager.track(task)

    async def _background_refresh(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            logger.debug("wsplugin metrics: refresh failed: %r", exc)
        finally:
            self._refreshing = False


def register_collector(
    manager: WebSocketManager, registry: CollectorRegistry | None = None
) -> WSCollector:
    """Add wsplugin's metrics to ``registry`` (default: prometheus-client's ``REGISTRY``).

    For apps that already expose ``/metrics`` (prometheus-fastapi-instrumentator,
    ``make_asgi_app()``...). Turns on the delivery latency histogram.
    """
    if manager.tally.latency is None:
        manager.tally.latency = DeliveryLatency()
    collector = WSCollector(manager)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def metrics_route(path: str, manager: WebSocketManager, token: str | None = None) -> Route:
    """``GET path``: this node's metrics in the Prometheus text format, with its own registry.

    With ``token``, a request needs ``Authorization: Bearer <token>`` (401 otherwise).
    """
    registry = CollectorRegistry(auto_describe=True)
    collector = register_collector(manager, registry)
    expected = None if token is None else f"Bearer {token}".encode()

    async def metrics(request: Request) -> Response:
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), expected
        ):
            return PlainTextResponse("metrics need a bearer token", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="wsplugin"'})
        try:
            await collector.refresh()
        except Exception as exc:  # the numbers this node has are still worth serving
            logger.warning("wsplugin metrics: cluster read failed: %r", exc)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route(path, metrics, methods=["GET"], name="wsplugin_metrics")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _histogram(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    buckets = [(bound, float(count)) for bound, count in histogram.cumulative()]
    return buckets, histogram.sum


def _broker_stats(broker: Any) -> dict[str, Any]:
    stats = getattr(broker, "stats", None)  # the Redis broker's own counters; memory has none
    return dict(stats()) if callable(stats) else {}


def _manager_loop(manager: WebSocketManager) -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # an exporter thread: the loop the manager runs on
        return manager.loop


def _scheme(url: str) -> str:
    return url.partition("://")[0] or url
