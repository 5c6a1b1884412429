"""Users across nodes on a real Redis: two managers on one Redis are two nodes (real uvicorn
servers, real clients); a worker killed with ``kill -9`` is a real uvicorn process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support import ThreadServer, subprocess_server
from tests.test_metrics import PATH, scrape, value
from tests.test_redis_cluster import Worker as Process
from tests.test_redis_cluster import wait_healthy
from tests.test_users import authenticate, client, listed, nothing_but, refused, url
from tests.ws_helpers import (
    close_code,
    on_server,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import WebSocketManager
from wsplugin.backends.redis import RedisBroker

pytestmark = [pytest.mark.redis]

Node = tuple[ThreadServer, WebSocketManager]


@contextlib.contextmanager
def nodes(url: str, prefix: str, count: int = 2, **options: Any) -> Iterator[list[Node]]:
    """``count`` uvicorn servers, each with its own manager, on one Redis: one cluster."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve(backend=url, redis_prefix=prefix,
                                         authenticate=authenticate, **options))
               for _ in range(count)]


async def see_each_other(*cluster: Node) -> None:
    for server, manager in cluster:
        await wait_until(lambda s=server, m=manager: _nodes(s, m, len(cluster)),  # type: ignore[misc]
                         what="every node in the registry")


async def _nodes(server: ThreadServer, manager: WebSocketManager, count: int) -> bool:
    return len(await on_server(server, manager.nodes())) == count


async def user_count(node: Node, user: str, count: int) -> bool:
    return len(await listed(node[0], node[1], user=user)) == count


async def test_send_user_and_kick_user_reach_the_user_on_every_node(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix) as [a, b]:
        await see_each_other(a, b)
        alice = [await client(a[0], "red", user="alice"), await client(a[0], "blue", user="alice"),
                 await client(b[0], "red", user="alice")]
        bob, bob_id = await client(b[0], "red", user="bob")

        for origin in (a, b):
            sent = await on_server(origin[0], origin[1].send_user("alice", {"to": "alice"}))
            assert sent == 3
            for ws, _ in alice:
                assert (await recv_json(ws))["data"] == {"to": "alice"}
        assert await on_server(a[0], a[1].send_user("nobody", "x")) == 0
        assert await on_server(a[0], a[1].send(bob_id, "marker")) is True
        assert await nothing_but(bob, "marker") == ["marker"]  # bob got none of alice's

        assert await on_server(b[0], b[1].kick_user("alice", reason="bye")) == 3
        for ws, _ in alice:
            assert await close_code(ws) == 4000
            assert ws.close_reason == "bye"
        assert await on_server(a[0], a[1].kick_user("alice")) == 0
        await bob.close()


async def test_connections_filter_by_user_across_nodes(redis_url: str, redis_prefix: str) -> None:
    with nodes(redis_url, redis_prefix, client_publish=True) as [a, b]:
        (wa, id_a), (wb, id_b) = await client(a[0], "x", user="carol"), await client(b[0], "y",
                                                                                   user="carol")
        dave, _ = await client(b[0], "x", user="dave")
        for node in (a, b):
            await wait_until(lambda n=node: user_count(n, "carol", 2),  # type: ignore[misc]
                             what="carol's connections on both nodes")
            infos = await listed(node[0], node[1], user="carol")
            assert {(i.id, i.node, i.user) for i in infos} == {
                (id_a, a[1].node_id, "carol"), (id_b, b[1].node_id, "carol")}
            assert {i.info["name"] for i in infos if i.info} == {"Carol"}
            assert [i.id for i in await listed(node[0], node[1], room="y", user="carol")] == [id_b]
        await wait_until(lambda: _in_room(a, "dave", "x"), what="dave in x, so b subscribed")
        await send_json(wa, {"type": "publish", "data": "hello x"})  # from a, to dave on b
        assert await recv_type(dave, "message") == {
            "type": "message", "room": "x", "data": "hello x", "sender": id_a, "user": "carol"}
        for ws in (wa, wb, dave):
            await ws.close()


async def _in_room(node: Node, user: str, room: str) -> bool:
    return len(await listed(node[0], node[1], room=room, user=user)) == 1


async def test_the_limit_holds_across_nodes_and_a_closed_connection_frees_its_slot(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix, max_connections_per_user=2, metrics_path=PATH) as [a, b]:
        on_a, _ = await client(a[0], "lobby", user="erin")
        on_b, _ = await client(b[0], "lobby", user="erin")
        await refused(url(a[0], "lobby", user="erin"))  # one here, one on b: the limit
        await refused(url(b[0], "lobby", user="erin"))
        other, _ = await client(a[0], "lobby", user="frank")
        assert a[1].tally.refused["user_limit"] == 1 and b[1].tally.refused["user_limit"] == 1
        samples = await scrape(a[0])
        assert value(samples, "wsplugin_connections_refused_total", reason="user_limit") == 1

        await on_b.close()
        await wait_until(lambda: user_count(a, "erin", 1), what="b's connection gone")
        again, _ = await client(a[0], "lobby", user="erin")  # the slot b held is free
        await refused(url(b[0], "lobby", user="erin"))
        for ws in (on_a, again, other):
            await ws.close()


async def test_concurrent_handshakes_on_two_nodes_cannot_pass_the_limit(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix, max_connections_per_user=3) as [a, b]:

        async def attempt(server: ThreadServer) -> ClientConnection | None:
            try:
                ws = await connect(url(server, "lobby", user="grace"))
            except InvalidStatus as exc:
                assert exc.response.status_code == 403
                return None
            assert (await recv_json(ws))["type"] == "welcome"
            return ws

        results = await asyncio.gather(*(attempt(s) for s in [a[0], b[0]] * 10))
        accepted = [ws for ws in results if ws is not None]
        assert len(accepted) == 3
        assert a[1].tally.refused["user_limit"] + b[1].tally.refused["user_limit"] == 17
        await wait_until(lambda: user_count(a, "grace", 3), what="three connections listed")
        assert len(a[1].user_slots) == len(b[1].user_slots) == 0
        for ws in accepted:
            await ws.close()


async def test_claims_are_atomic_under_a_storm_of_two_brokers(
    redis_url: str, redis_prefix: str
) -> None:
    brokers = [RedisBroker(redis_url, prefix=redis_prefix) for _ in range(2)]

    class Idle:  # the manager's side of the contract: nothing local
        def deliver_remote(self, room: str, frame: Any, exclude: frozenset[str]) -> int:
            return 0

        async def run_command(self, command: Any) -> int:
            return 0

        def local_connections(self) -> list[Any]:
            return []

        def local_rooms(self) -> list[str]:
            return []

        def local_stats(self) -> dict[str, int]:
            return {}

    for broker in brokers:
        await broker.start(Idle())
    try:
        assert all(broker.listener.connected for broker in brokers)  # else claims are local
        claims = [brokers[n % 2].claim_user_slot("heidi", f"c{n}", 5) for n in range(60)]
        granted = [f"c{n}" for n, ok in enumerate(await asyncio.gather(*claims)) if ok]
        assert len(granted) == 5
        assert await brokers[0].claim_user_slot("heidi", granted[0], 5)  # held: still its own
        assert not await brokers[1].claim_user_slot("heidi", "late", 5)
        owner = brokers[int(granted[1][1:]) % 2]
        owner.release_user_slot(granted[1])
        await wait_until(lambda: brokers[1].claim_user_slot("heidi", "late", 5),
                         what="a released slot taken")
    finally:
        for broker in brokers:
            await broker.stop()


async def test_a_node_stopping_cleanly_frees_its_slots_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    with serve(backend=redis_url, redis_prefix=redis_prefix, authenticate=authenticate,
               max_connections_per_user=1, registry_ttl=60.0) as b:
        with serve(backend=redis_url, redis_prefix=redis_prefix, authenticate=authenticate,
                   max_connections_per_user=1, registry_ttl=60.0) as a:
            held, _ = await client(a[0], "lobby", user="ivan")
            await refused(url(b[0], "lobby", user="ivan"))
        # a stopped (its client was told to go elsewhere): its claim is gone long before
        # the 60 s TTL
        assert await close_code(held) in (1001, 1012)
        ws, _ = await client(b[0], "lobby", user="ivan")
        await ws.close()


USERS_APP = "tests.apps.users_app:app"


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_killed_node_stops_counting_within_the_registry_ttl(
    redis_url: str, redis_prefix: str
) -> None:
    ttl = 3.0
    env = {"WSPLUGIN_BACKEND": redis_url, "WSPLUGIN_REDIS_PREFIX": redis_prefix,
           "WSPLUGIN_REGISTRY_TTL": str(ttl), "WSPLUGIN_MAX_CONNECTIONS_PER_USER": "2"}
    with contextlib.ExitStack() as stack:
        workers = []
        for _ in range(2):
            proc, port = stack.enter_context(subprocess_server(USERS_APP, env=env))
            workers.append(Process(port, proc.pid))
        for worker in workers:
            wait_healthy(worker)
        a, b = workers
        clients = [await connect(a.ws("lobby?user=judy")) for _ in range(2)]
        for ws in clients:
            assert (await recv_json(ws))["type"] == "welcome"
        await _refused_on(b)
        assert (await _get(b, "/refused"))["user_limit"] == 1

        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        ws = await _first_accepted(b, limit=ttl + 5)
        took = time.monotonic() - killed
        # claims expire registry_ttl after the dead node's last heartbeat (before the kill);
        # the slack is for this loop's polling and a loaded machine's handshakes
        assert took <= ttl + 2.0, f"judy's slots on the killed node counted for {took:.1f}s"
        assert (await recv_json(ws))["type"] == "welcome"
        second = await connect(b.ws("lobby?user=judy"))  # both of the dead node's slots
        assert (await recv_json(second))["type"] == "welcome"
        await _refused_on(b)  # and the limit holds again, with two on b
        for client_ws in (ws, second):
            await client_ws.close()


async def _refused_on(worker: Process) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(worker.ws("lobby?user=judy"))
    assert info.value.response.status_code == 403


async def _first_accepted(worker: Process, limit: float) -> ClientConnection:
    """Try to connect judy to ``worker`` until it is accepted (refusals are expected)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await connect(worker.ws("lobby?user=judy"))
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _get(worker: Process, path: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(worker.http + path)
        response.raise_for_status()
        return response.json()
