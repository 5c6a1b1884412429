"""The admin's listings at scale: a page builds the records of its rows only, a search
yields to the event loop between slices, the event log keeps the rare kinds under a flood.
Real uvicorn, 600 idle connections held by a client process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from admin_ui import listings
from admin_ui.event_log import EventLog
from tests.admin_helpers import ADMIN, OPERATOR, create_app, manager_of
from tests.support import ROOT, ThreadServer
from tests.test_memory_budget import idle_clients
from tests.ws_helpers import on_server, wait_until
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.hub import Hub
from wsplugin.events import Event

N = 600


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    with ThreadServer(create_app(rate_limit=None)) as running:
        yield running


@pytest.fixture
async def http(server: ThreadServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{server.url}{ADMIN}/api", headers=OPERATOR,
                                 timeout=30) as client:
        yield client


class Records:
    """Counts the connection records (``Connection.info``) built while it is on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        original = Connection.info

        def counting(conn: Connection) -> Any:
            self.built += 1
            return original(conn)

        monkeypatch.setattr(Connection, "info", counting)


@pytest.mark.timeout(120)
async def test_a_page_builds_its_own_rows_only(
    server: ThreadServer, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = manager_of(server.config.app)
    async with idle_clients(f"{server.ws_url}/ws/crowd", N, False), \
            idle_clients(f"{server.ws_url}/ws/other", 10, False):
        await wait_until(lambda: _open(manager, N + 10), 30, what="the connections")
        everyone = list(manager.hub.connections)
        records = Records(monkeypatch)
        page = (await http.get("/connections", params={"offset": 20, "limit": 50})).json()
        assert page["total"] == N + 10
        assert [item["id"] for item in page["items"]] == everyone[::-1][20:70]  # newest first
        in_room = (await http.get("/connections", params={"room": "crowd", "limit": 5})).json()
        assert in_room["total"] == N and len(in_room["items"]) == 5
        assert {tuple(item["rooms"]) for item in in_room["items"]} == {("crowd",)}
        detail = (await http.get("/rooms/crowd", params={"limit": 10})).json()
        assert detail["members"] == N and len(detail["connections"]["items"]) == 10
        rooms = (await http.get("/rooms")).json()
        assert [(r["name"], r["members"]) for r in rooms["items"]] == [("crowd", N), ("other", 10)]
        assert records.built == 50 + 5 + 10  # the rows shown, not the 610 connections
        target = everyone[123]
        found = (await http.get("/connections", params={"q": target[3:20].upper()})).json()
        assert [item["id"] for item in found["items"]] == [target]
        assert records.built == 50 + 5 + 10 + 1


async def _open(manager: Any, n: int) -> bool:
    return len(manager.hub.connections) >= n


class Item:
    """A connection as a listing sees it."""

    def __init__(self, n: int) -> None:
        self.id = f"c{n:06d}"
        self.connected_at = float(n)
        self.identity_text = None
        self.user_id = None
        self.rooms = {"r"}


async def test_a_search_yields_to_the_loop_between_slices() -> None:
    items: list[Any] = [Item(n) for n in range(5 * listings.SLICE)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    found = await listings.search(items, "c00")  # c000000 .. c009999: all of them
    task.cancel()
    assert len(found) == len(items)
    assert ticks - before >= 4  # the other task ran between the 5 slices


def event(kind: Any, n: int) -> Event:
    return Event(kind, connection_id=f"c{n}")


def test_the_event_log_keeps_each_kind_apart() -> None:
    log = EventLog(per_kind=100)
    log.append(1, event("kicked", 1))
    for seq in range(2, 5002):
        log.append(seq, event("broadcast", seq))
    log.append(5002, event("connected", 5002))
    assert len(log) == 100 + 1 + 1
    newest = log.newest(3)
    assert [seq for seq, _ in newest] == [5002, 5001, 5000]
    assert [(seq, e.kind) for seq, e in log.newest(10, kinds={"kicked"})] == [(1, "kicked")]
    each = log.newest_each(2, after=0)  # per kind: the rare ones are never crowded out
    assert [seq for seq, _ in each] == [5002, 5001, 5000, 1]
    assert [seq for seq, _ in log.newest_each(2, after=5000)] == [5002, 5001]


@pytest.mark.timeout(60)
async def test_a_kick_survives_a_flood_of_broadcasts(
    server: ThreadServer, http: httpx.AsyncClient,
) -> None:
    manager = manager_of(server.config.app)
    async with idle_clients(f"{server.ws_url}/ws/crowd", 3, False):
        await wait_until(lambda: _open(manager, 3), what="the connections")
        victim = next(iter(manager.hub.connections))
        assert await on_server(server, manager.kick(victim, reason="spam"))

        async def flood() -> None:
            for n in range(3000):
                await manager.broadcast("crowd", n)

        await on_server(server, flood(), 60)
    kicks = (await http.get("/events", params={"kind": "kicked"})).json()
    assert [(e["kind"], e["connection_id"], e["detail"]) for e in kicks] == [
        ("kicked", victim, "spam")]
    both = (await http.get("/events", params=[("kind", "kicked"), ("kind", "connected"),
                                               ("limit", 10)])).json()
    assert {e["kind"] for e in both} == {"kicked", "connected"}
    everything = (await http.get("/events", params={"limit": 500})).json()
    assert len(everything) == 500  # every kind, newest first: mostly the flood
    assert sum(e["kind"] == "broadcast" for e in everything) >= 490
    bad = await http.get("/events", params={"kind": "nonsense"})
    assert bad.status_code == 422


class Member:
    def __init__(self, n: int) -> None:
        self.id = f"m{n}"
        self.rooms: set[str] = set()
        self.user_id = None


def test_the_hubs_newest_first_view_copies_nothing() -> None:
    hub: Hub[Any] = Hub()
    for n in range(10):
        hub.add(Member(n))
    view = hub.newest_first()
    assert len(view) == 10
    assert [m.id for m in view[0:3]] == ["m9", "m8", "m7"]
    assert [m.id for m in view[8:50]] == ["m1", "m0"]
    assert view[0].id == "m9" and view[-1].id == "m0"
    assert [m.id for m in view[::3]] == ["m9", "m6", "m3", "m0"]
    hub.add(Member(10))  # a view: it follows the hub
    assert len(view) == 11 and view[0].id == "m10"
    with pytest.raises(IndexError):
        view[11]


GC_SCRIPT = """
import gc, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from wsplugin import install_ws_manager
if sys.argv[2] != "default":
    gc.set_threshold(*map(int, sys.argv[2].split(",")))
app = FastAPI()
install_ws_manager(app, admin_path=None, gc_tuning=sys.argv[1] == "on")
print(gc.get_freeze_count(), *gc.get_threshold())
with TestClient(app):
    frozen = gc.get_freeze_count()
    print(frozen, *gc.get_threshold())
with TestClient(app):
    print(gc.get_freeze_count() - frozen, *gc.get_threshold())
"""


@pytest.mark.parametrize(("tuning", "thresholds", "after"), [
    ("on", "default", (50_000, 10, 10)),
    ("on", "1000,10,10", (1000, 10, 10)),  # the app chose its own: kept
    ("off", "default", (700, 10, 10)),
])
def test_the_collector_is_tuned_once_when_the_manager_starts(
    tuning: str, thresholds: str, after: tuple[int, int, int],
) -> None:
    """A fresh process: once the manager started, the app's objects are frozen out of the
    collector's scans and, unless the app set its own, the first threshold is raised."""
    done = subprocess.run([sys.executable, "-c", GC_SCRIPT, tuning, thresholds], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    lines = [[int(n) for n in line.split()] for line in done.stdout.splitlines()]
    assert lines[0][0] == 0
    assert (lines[1][0] > 10_000) is (tuning == "on")  # the start-up heap, frozen
    assert lines[2][0] <= 0  # not frozen again by a second start
    assert tuple(lines[1][1:]) == tuple(lines[2][1:]) == after
