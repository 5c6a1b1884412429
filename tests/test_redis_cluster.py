"""Several real uvicorn worker processes behave as one server through a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import subprocess_server

pytestmark = [pytest.mark.redis, pytest.mark.slow]

APP = "tests.apps.cluster_app:app"


@dataclass
class Worker:
    port: int
    pid: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}"


def cluster_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "WSPLUGIN_BACKEND": redis_url,
        "WSPLUGIN_REDIS_PREFIX": prefix,
        **extra,
    }


@contextlib.contextmanager
def start_cluster(count: int, env: dict[str, str]) -> Iterator[list[Worker]]:
    """``count`` uvicorn processes of the cluster app, each healthy before this yields."""
    with contextlib.ExitStack() as stack:
        workers = []
        for _ in range(count):
            proc, port = stack.enter_context(subprocess_server(APP, env=env))
            workers.append(Worker(port, proc.pid))
        for worker in workers:
            wait_healthy(worker)
        yield workers


def wait_healthy(worker: Worker, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{worker.http}/ws-health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"worker on port {worker.port} not healthy after {limit}s")


@pytest.fixture(scope="module")
def cluster(redis_url: str) -> Iterator[list[Worker]]:
    prefix = f"wsplugin-test-cluster-{uuid.uuid4().hex[:8]}"
    with start_cluster(2, cluster_env(redis_url, prefix)) as workers:
        yield workers


async def api(method: str, url: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(method, url, json=body)
        response.raise_for_status()
        return response.json()


async def client(worker: Worker, room: str) -> tuple[ClientConnection, str]:
    ws = await connect(worker.ws(room))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws, str(welcome["connection_id"])


async def next_of(ws: ClientConnection, kind: str, limit: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(limit):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


async def messages_until(ws: ClientConnection, marker: Any, limit: float = 5.0) -> list[Any]:
    """The data of every message up to and including ``marker``."""
    seen: list[Any] = []
    async with asyncio.timeout(limit):
        while not seen or seen[-1] != marker:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message":
                seen.append(frame["data"])
    return seen


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 10.0) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"condition still false after {limit}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def registered(worker: Worker, ids: set[str], room: str | None = None) -> bool:
    url = f"{worker.http}/connections" + (f"?room={room}" if room else "")
    return ids <= {c["id"] for c in await api("GET", url)}


async def test_announce_on_any_worker_reaches_every_worker(cluster: list[Worker]) -> None:
    a, b = cluster
    ws_a, id_a = await client(a, "news")
    ws_b, id_b = await client(b, "news")
    await eventually(lambda: registered(a, {id_a, id_b}, "news"))
    for origin, text in ((b, "from b"), (a, "from a")):
        await api("POST", f"{origin.http}/announce/news", {"text": text})
        for ws in (ws_a, ws_b):
            frame = await next_of(ws, "message")
            assert frame == {
                "type": "message",
                "room": "news",
                "data": {"text": text},
                "sender": None,
            }
    await api("POST", f"{a.http}/announce-all", "everyone")
    for ws in (ws_a, ws_b):
        assert (await next_of(ws, "message"))["data"] == "everyone"
    await ws_a.close()
    await ws_b.close()


async def test_client_publish_reaches_other_worker_once_and_echoes_once(
    cluster: list[Worker],
) -> None:
    a, b = cluster
    ws_a, id_a = await client(a, "chat")
    ws_b, id_b = await client(b, "chat")
    await eventually(lambda: registered(b, {id_a}, "chat"))
    await eventually(lambda: registered(a, {id_b}, "chat"))
    await ws_b.send(json.dumps({"type": "publish", "data": "hi"}))
    await ws_b.send(json.dumps({"type": "publish", "data": "end"}))
    assert await messages_until(ws_a, "end") == ["hi", "end"]
    assert await messages_until(ws_b, "end") == ["hi", "end"]
    # a later marker proves no late duplicate of "hi" was still on its way
    await api("POST", f"{b.http}/announce/chat", "marker")
    assert await messages_until(ws_a, "marker") == ["marker"]
    assert await messages_until(ws_b, "marker") == ["marker"]
    await ws_a.close()
    await ws_b.close()


async def test_send_kick_join_leave_by_id_on_the_other_worker(cluster: list[Worker]) -> None:
    a, b = cluster
    ws, conn_id = await client(a, "lobby")
    await eventually(lambda: registered(b, {conn_id}))
    assert await api("POST", f"{b.http}/send/{conn_id}", {"private": 1}) == {"found": True}
    assert (await next_of(ws, "message"))["data"] == {"private": 1}
    assert await api("POST", f"{b.http}/join/{conn_id}/vip") == {"found": True}
    assert (await next_of(ws, "joined"))["room"] == "vip"
    await eventually(lambda: registered(b, {conn_id}, "vip"))
    await api("POST", f"{b.http}/announce/vip", "vip only")
    assert (await next_of(ws, "message"))["data"] == "vip only"
    assert await api("POST", f"{b.http}/leave/{conn_id}/vip") == {"found": True}
    assert (await next_of(ws, "left"))["room"] == "vip"
    assert await api("POST", f"{b.http}/send/no-such-id", "x") == {"found": False}
    assert await api("POST", f"{b.http}/kick/{conn_id}?reason=bye") == {"found": True}
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert ws.close_code == 4000
    assert ws.close_reason == "bye"
    await eventually(lambda: gone(b, conn_id))


async def gone(worker: Worker, conn_id: str) -> bool:
    return conn_id not in {c["id"] for c in await api("GET", f"{worker.http}/connections")}


async def test_connections_and_rooms_are_cluster_wide(cluster: list[Worker]) -> None:
    a, b = cluster
    clients = [await client(a, "x1"), await client(a, "x2"), await client(b, "x2")]
    ids = {conn_id for _, conn_id in clients}
    for worker in (a, b):
        await eventually(lambda w=worker: registered(w, ids))  # type: ignore[misc]
        assert {c["id"] for c in await api("GET", f"{worker.http}/connections?room=x2")} >= {
            clients[1][1],
            clients[2][1],
        }
        rooms = await api("GET", f"{worker.http}/rooms")
        assert rooms["x1"] == 1
        assert rooms["x2"] == 2
        nodes = await api("GET", f"{worker.http}/nodes")
        assert len(nodes) == 2
    listed = await api("GET", f"{a.http}/connections")
    nodes_of = {c["id"]: c["node"] for c in listed if c["id"] in ids}
    assert len(set(nodes_of.values())) == 2  # each connection says which node holds it
    for ws, _ in clients:
        await ws.close()
