"""RedisBroker against a real redis-server, with a tiny fake manager on each side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio

from tests.redis_server import RedisFactory
from wsplugin.backends import create_broker
from wsplugin.backends.base import ALL_ROOMS, BrokerError, Command
from wsplugin.backends.redis import RedisBroker, wire
from wsplugin.events import Event, EventBus
from wsplugin.history import History
from wsplugin.info import ConnectionInfo
from wsplugin.types import Frame

pytestmark = pytest.mark.redis


class FakeHandler:
    """The manager's side of the contract, recording what the broker asks of it."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, Frame, frozenset[str]]] = []
        self.commands: list[Command] = []
        self.conns: dict[str, ConnectionInfo] = {}

    def deliver_remote(self, room: str, frame: Frame, exclude: frozenset[str]) -> int:
        self.delivered.append((room, frame, exclude))
        return 1

    async def run_command(self, command: Command) -> bool:
        self.commands.append(command)
        return command.connection_id in self.conns

    def local_connections(self) -> list[ConnectionInfo]:
        return list(self.conns.values())

    def local_rooms(self) -> list[str]:
        return sorted({room for info in self.conns.values() for room in info.rooms})

    def local_stats(self) -> dict[str, int]:
        return {"connections": len(self.conns), "messages_in": 3}

    def frames(self, room: str) -> list[Frame]:
        return [frame for r, frame, _ in self.delivered if r == room]


def info(connection_id: str, *rooms: str) -> ConnectionInfo:
    return ConnectionInfo(connection_id, "alice", rooms, "127.0.0.1:1", "test", time.time())


async def eventually(check: Callable[[], Awaitable[bool] | bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {limit}s")
        await asyncio.sleep(0.05)


Node = tuple[RedisBroker, FakeHandler]


@asynccontextmanager
async def node(url: str, prefix: str, **options: Any) -> AsyncIterator[Node]:
    broker = create_broker(url, prefix=prefix, **options)
    assert isinstance(broker, RedisBroker)
    handler = FakeHandler()
    await broker.start(handler)
    try:
        yield broker, handler
    finally:
        await broker.stop()


async def join(node: Node, connection_id: str, *rooms: str) -> None:
    broker, handler = node
    handler.conns[connection_id] = info(connection_id, *rooms)
    for room in rooms:
        await broker.subscribe(room)
    await broker.register(handler.conns[connection_id])


async def is_ok(broker: RedisBroker) -> bool:
    return bool((await broker.health())["status"] == "ok")


async def all_ok(*brokers: RedisBroker) -> bool:
    return all([await is_ok(broker) for broker in brokers])


async def test_publish_reaches_the_other_node_once_and_not_the_sender(
    redis_url: str, redis_prefix: str
) -> None:
    async with node(redis_url, redis_prefix) as a, node(redis_url, redis_prefix) as b:
        await join(a, "a1", "lobby")
        await join(b, "b1", "lobby")
        await a[0].publish("lobby", '{"n":1}', frozenset({"b9"}))
        await a[0].publish("lobby", b"\x00bin", frozenset())
        await eventually(lambda: len(b[1].delivered) == 2)
        assert b[1].delivered == [
            ("lobby", '{"n":1}', frozenset({"b9"})),
            ("lobby", b"\x00bin", frozenset()),
        ]
        await asyncio.sleep(0.2)
        assert a[1].delivered == []  # its own message came back and was ignored
        assert a[0].stats()["own_echoes"] == 2


async def test_only_subscribed_rooms_arrive_and_unsubscribe_stops_them(
    redis_url: str, redis_prefix: str
) -> None:
    async with node(redis_url, redis_prefix) as a, node(redis_url, redis_prefix) as b:
        await join(b, "b1", "red")
        await a[0].publish("blue", "nobody listens", frozenset())
        await a[0].publish("red", "one", frozenset())
        await eventually(lambda: b[1].frames("red") == ["one"])
        await b[0].unsubscribe("red")
        await a[0].publish("red", "two", frozenset())
        await a[0].publish(ALL_ROOMS, "everyone", frozenset())  # every node gets "*"
        await eventually(lambda: b[1].frames(ALL_ROOMS) == ["everyone"])
        assert b[1].frames("red") == ["one"]
        assert b[1].frames("blue") == []


async def test_messages_from_one_node_keep_their_order(redis_url: str, redis_prefix: str) -> None:
    async with node(redis_url, redis_prefix) as a, node(redis_url, redis_prefix) as b:
        await join(b, "b1", "seq")
        await asyncio.gather(*(a[0].publish("seq", str(i), frozenset()) for i in range(500)))
        await eventually(lambda: len(b[1].frames("seq")) == 500)
        assert b[1].frames("seq") == [str(i) for i in range(500)]
        assert a[0].publisher.batches < 500  # concurrent publishes shared round trips


async def test_registry_lists_the_other_nodes(redis_url: str, redis_prefix: str) -> None:
    fast = {"registry_ttl": 1.5}  # heartbeat every 0.5 s
    async with node(redis_url, redis_prefix, **fast) as a, node(redis_url, redis_prefix) as b:
        await join(a, "a1", "lobby")
        await join(a, "a2", "lobby", "vip")
        await join(b, "b1", "lobby")
        remote = await b[0].remote_connections()
        assert sorted(i.id for i in remote) == ["a1", "a2"]
        assert {i.node for i in remote} == {a[0].node_id}
        assert [i.id for i in await b[0].remote_connections("vip")] == ["a2"]
        assert dict(await b[0].remote_rooms()) == {"lobby": 2, "vip": 1}
        assert dict(await a[0].remote_rooms()) == {"lobby": 1}
        a[1].conns["a2"] = info("a2", "lobby")  # a2 left "vip"
        await a[0].register(a[1].conns["a2"])
        assert dict(await b[0].remote_rooms()) == {"lobby": 2}
        del a[1].conns["a1"]
        await a[0].unregister("a1")
        assert [i.id for i in await b[0].remote_connections()] == ["a2"]
        await eventually(lambda: _node_has(b[0], a[0].node_id, connections=1))
        nodes = await b[0].nodes()
        assert [n["id"] for n in nodes] == [a[0].node_id]
        assert {"host", "pid", "started", "last_heartbeat", "connections", "stats"} <= set(nodes[0])
        assert nodes[0]["stats"] == {"connections": 1, "messages_in": 3}
        assert nodes[0]["connections"] == 1
        assert nodes[0]["broker"]["own_echoes"] == 0
    async with node(redis_url, redis_prefix) as c:
        assert await c[0].nodes() == []  # a clean stop removes a node at once
        assert await c[0].remote_connections() == []


async def _node_has(broker: RedisBroker, node_id: str, connections: int) -> bool:
    nodes = await broker.nodes()
    return any(n["id"] == node_id and n["connections"] == connections for n in nodes)


async def test_heartbeat_refreshes_counters(redis_url: str, redis_prefix: str) -> None:
    async with (
        node(redis_url, redis_prefix, registry_ttl=1.5) as a,
        node(redis_url, redis_prefix) as b,
    ):
        await join(a, "a1", "lobby")
        a[1].conns["a1"] = ConnectionInfo("a1", None, ("lobby",), "", "", 0.0, messages_in=42)
        await eventually(lambda: _messages_in(b[0]), limit=5)


async def _messages_in(broker: RedisBroker) -> bool:
    return [i.messages_in for i in await broker.remote_connections()] == [42]


async def test_commands_are_routed_to_the_owner(redis_url: str, redis_prefix: str) -> None:
    async with node(redis_url, redis_prefix) as a, node(redis_url, redis_prefix) as b:
        await join(a, "a1", "lobby")
        assert await b[0].command(Command("send", "a1", frame=b"\x01"))
        assert await b[0].command(Command("kick", "a1", reason="spam"))
        assert await b[0].command(Command("join", "a1", room="vip"))
        assert a[1].commands == [
            Command("send", "a1", frame=b"\x01"),
            Command("kick", "a1", reason="spam"),
            Command("join", "a1", room="vip"),
        ]
        assert not await b[0].command(Command("send", "nobody", frame="x"))
        del a[1].conns["a1"]  # gone locally but still registered: the owner says no
        assert not await b[0].command(Command("leave", "a1", room="vip"))


async def test_events_are_relayed_to_other_nodes_without_loops(
    redis_url: str, redis_prefix: str
) -> None:
    a_bus, b_bus = EventBus("a"), EventBus("b")
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    a_bus.subscribe(seen_a.append)
    b_bus.subscribe(seen_b.append)
    broker_a = create_broker(redis_url, prefix=redis_prefix)
    broker_b = create_broker(redis_url, prefix=redis_prefix)
    broker_a.attach_events(a_bus)
    broker_b.attach_events(b_bus)
    await broker_a.start(FakeHandler())
    await broker_b.start(FakeHandler())
    try:
        a_bus.node = broker_a.node_id
        b_bus.node = broker_b.node_id
        a_bus.emit("connected", connection_id="a1", identity="alice")
        await eventually(lambda: any(e.connection_id == "a1" for e in seen_b))
        relayed = next(e for e in seen_b if e.connection_id == "a1")
        assert (relayed.kind, relayed.node, relayed.identity) == (
            "connected",
            broker_a.node_id,
            "alice",
        )
        await asyncio.sleep(0.6)  # b must not send it back, a must not get its own
        assert [e.connection_id for e in seen_a if e.kind == "connected"] == ["a1"]
    finally:
        await broker_a.stop()
        await broker_b.stop()


async def test_health_ok_when_subscribed(redis_url: str, redis_prefix: str) -> None:
    async with node(redis_url, redis_prefix, ping_interval=0.2) as a:
        await eventually(lambda: is_ok(a[0]))
        health = await a[0].health()
        assert health["backend"] == "redis"
        assert health["subscribed"] is True
        assert health["last_self_ping_age"] < 5


async def test_unreachable_redis_starts_degraded_and_fails_fast() -> None:
    from tests.support import free_port

    broker = create_broker(f"redis://127.0.0.1:{free_port()}/0", prefix="x")
    handler = FakeHandler()
    await broker.start(handler)
    try:
        health = await broker.health()
        assert health["status"] == "degraded"
        assert health["subscribed"] is False
        started = time.monotonic()
        with pytest.raises(BrokerError):
            await broker.publish("room", "x", frozenset())
        with pytest.raises(BrokerError):
            await broker.publish("room", "x", frozenset())
        assert time.monotonic() - started < 2.5
        await broker.register(info("c1", "room"))  # never raises, never hangs
        assert not await broker.command(Command("send", "c1", frame="x"))
        assert await broker.remote_connections() == []
    finally:
        await broker.stop()
        await broker.stop()  # safe twice


@pytest.mark.timeout(60)
async def test_redis_restart_resubscribes_and_reregisters(
    redis_factory: RedisFactory, redis_prefix: str
) -> None:
    server = redis_factory()
    opts: dict[str, Any] = {"ping_interval": 0.3, "reconnect_max_delay": 0.5}
    async with (
        node(server.url, redis_prefix, **opts) as a,
        node(server.url, redis_prefix, **opts) as b,
    ):
        await join(a, "a1", "lobby")
        await join(b, "b1", "lobby", "vip")
        await a[0].publish("vip", "before", frozenset())
        await eventually(lambda: b[1].frames("vip") == ["before"])

        server.kill()
        await eventually(lambda: not a[0].listener.connected and not b[0].listener.connected)
        with pytest.raises(BrokerError):
            await a[0].publish("vip", "lost", frozenset())
        assert (await a[0].health())["status"] == "degraded"
        await join(b, "b2", "late")  # a room joined during the outage

        server.restart()
        await eventually(lambda: all_ok(a[0], b[0]), limit=15)
        await eventually(lambda: _published(a[0], "vip", "after"))
        await eventually(lambda: "after" in b[1].frames("vip"))
        await eventually(lambda: _published(a[0], "late", "late-msg"))
        await eventually(lambda: "late-msg" in b[1].frames("late"))
        assert "lost" not in b[1].frames("vip")
        await eventually(lambda: _remote_ids(a[0], ["b1", "b2"]))  # re-registered
        assert b[0].stats()["reconnects"] >= 1


async def _published(broker: RedisBroker, room: str, frame: str) -> bool:
    try:
        await broker.publish(room, frame, frozenset())
    except BrokerError:
        return False
    return True


async def _remote_ids(broker: RedisBroker, ids: list[str]) -> bool:
    return sorted(i.id for i in await broker.remote_connections()) == ids


async def test_killed_pubsub_client_is_noticed_and_repaired(
    redis_factory: RedisFactory, redis_prefix: str
) -> None:
    server = redis_factory()
    opts: dict[str, Any] = {"ping_interval": 0.2}
    async with (
        node(server.url, redis_prefix, **opts) as a,
        node(server.url, redis_prefix, **opts) as b,
    ):
        await join(b, "b1", "lobby")
        await eventually(lambda: is_ok(b[0]))
        killed = server.client().client_kill_filter(_type="pubsub")
        assert killed == 2
        await eventually(lambda: b[0].stats()["reconnects"] >= 1)
        await eventually(lambda: is_ok(b[0]))
        await a[0].publish("lobby", "flows", frozenset())
        await eventually(lambda: b[1].frames("lobby") == ["flows"])


async def test_silently_deaf_node_notices_through_self_ping(
    redis_url: str, redis_prefix: str
) -> None:
    async with (
        node(redis_url, redis_prefix, ping_interval=0.2) as a,
        node(redis_url, redis_prefix) as b,
    ):
        await join(a, "a1", "lobby")
        await eventually(lambda: is_ok(a[0]))
        pubsub = a[0].listener.pubsub
        assert pubsub is not None
        # drop every subscription behind the broker's back: the connection stays open
        await pubsub.unsubscribe()
        await eventually(lambda: a[0].stats()["deaf_repairs"] >= 1)
        await eventually(lambda: is_ok(a[0]))
        await b[0].publish("lobby", "heard", frozenset())
        await eventually(lambda: a[1].frames("lobby") == ["heard"])


async def test_broker_built_before_a_fork_takes_a_new_node_id(
    redis_url: str, redis_prefix: str
) -> None:
    bus = EventBus("inherited")
    forked = create_broker(redis_url, prefix=redis_prefix)
    assert isinstance(forked, RedisBroker)
    inherited = forked.node_id
    forked.attach_events(bus)
    forked.node.pid = -1  # as if this object had been created in the parent process
    handler = FakeHandler()
    await forked.start(handler)
    try:
        assert forked.node_id != inherited
        assert bus.node == forked.node_id
        async with node(redis_url, redis_prefix) as other:
            await join((forked, handler), "f1", "room")
            await other[0].publish("room", "hello", frozenset())
            await eventually(lambda: handler.frames("room") == ["hello"])
            assert await other[0].command(Command("send", "f1", frame="x"))
    finally:
        await forked.stop()


async def test_after_a_fork_every_part_speaks_for_the_new_node(
    redis_url: str, redis_prefix: str
) -> None:
    """Room messages, history publishes, relayed events, own echoes, registry entries and
    health all carry the new id: one node identity, read by every part."""
    bus = EventBus("inherited")
    forked = create_broker(redis_url, prefix=redis_prefix, registry_ttl=1.5)
    assert isinstance(forked, RedisBroker)
    forked.attach_events(bus)
    forked.node.pid = -1  # as if this object had been created in the parent process
    handler = FakeHandler()
    raw = redis.asyncio.Redis.from_url(redis_url)
    watcher = raw.pubsub()
    await watcher.subscribe(f"{redis_prefix}:room:r", f"{redis_prefix}:events")
    await forked.start(handler)
    try:
        me = forked.node_id
        await join((forked, handler), "f1", "r")
        await forked.publish("r", "plain", frozenset())
        store = forked.history_store()
        await store.publish("r", '{"event":"message","data":1', frozenset(), History(size=5))
        bus.emit("connected", connection_id="f1")
        seen = await _senders(watcher, f"{redis_prefix}:events")
        assert seen["room"] == [me] and seen["history"] == [me] and me in seen["events"]
        assert set(seen["events"]) == {me}
        await eventually(lambda: forked.stats()["own_echoes"] == 1)
        assert handler.delivered == []  # its own plain message was recognised as an echo
        assert (await forked.health())["node"] == me
        async with node(redis_url, redis_prefix) as other:
            await eventually(lambda: _node_has(other[0], me, connections=1))
            assert [i.node for i in await other[0].remote_connections()] == [me]
    finally:
        await forked.stop()
        await watcher.aclose()
        await raw.aclose()


async def _senders(watcher: Any, events: str) -> dict[str, list[str]]:
    """The sending node of a plain and a history room message and of an event batch."""
    seen: dict[str, list[str]] = {"room": [], "history": [], "events": []}
    deadline = time.monotonic() + 10
    while not (seen["room"] and seen["history"] and seen["events"]):
        assert time.monotonic() < deadline, f"still waiting: {seen}"
        message = await watcher.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is None:
            continue
        data = message["data"]
        if message["channel"].decode() == events:
            seen["events"].append(wire.unpack(data)[1].decode())
        elif wire.is_stream_message(data):
            seen["history"].append(wire.decode_stream_message(data).node)
        else:
            seen["room"].append(wire.decode_room_message(data).node)
    return seen


async def test_relayed_events_never_go_back_out_even_with_clashing_node_ids(
    redis_url: str, redis_prefix: str
) -> None:
    a_bus, b_bus = EventBus("same"), EventBus("same")  # e.g. ids inherited across a fork
    seen_a: list[Event] = []
    a_bus.subscribe(seen_a.append)
    brokers = [create_broker(redis_url, prefix=redis_prefix) for _ in range(2)]
    brokers[0].attach_events(a_bus)
    brokers[1].attach_events(b_bus)
    for broker in brokers:
        await broker.start(FakeHandler())
    try:
        relayed: list[Event] = []
        b_bus.subscribe(relayed.append)
        a_bus.emit("joined", connection_id="c1", room="r")
        await eventually(lambda: len(relayed) == 1)
        await asyncio.sleep(0.7)  # three relay intervals: an echo would be back by now
        assert [e.kind for e in seen_a] == ["joined"]
        assert len(relayed) == 1
    finally:
        for broker in brokers:
            await broker.stop()


async def test_publish_nowait_keeps_order_with_awaited_publishes(
    redis_url: str, redis_prefix: str
) -> None:
    errors: list[BaseException] = []
    async with node(redis_url, redis_prefix) as a, node(redis_url, redis_prefix) as b:
        await join(a, "a1", "lobby")
        await join(b, "b1", "lobby")
        for n in range(50):
            assert a[0].publish_nowait("lobby", f'{{"n":{n}}}', frozenset(), errors.append)
        await a[0].publish("lobby", '{"n":50}', frozenset())
        await eventually(lambda: len(b[1].delivered) == 51)
        assert [frame for _, frame, _ in b[1].delivered] == [f'{{"n":{n}}}' for n in range(51)]
        assert errors == []


async def test_publish_nowait_failures_are_reported_not_lost() -> None:
    from tests.support import free_port

    broker = create_broker(f"redis://127.0.0.1:{free_port()}/0", prefix="x")
    await broker.start(FakeHandler())
    errors: list[BaseException] = []
    try:
        raised = 0
        for _ in range(3):
            try:
                broker.publish_nowait("room", "x", frozenset(), errors.append)
            except BrokerError:
                raised += 1  # known to fail at once (the breaker is open)
        await eventually(lambda: raised + len(errors) == 3)
        assert all(isinstance(error, BrokerError) for error in errors)
    finally:
        await broker.stop()
