"""History rooms cost nothing for rooms nobody published to, and offsets are bounded:
in-memory backend, real uvicorn, real clients."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support import ThreadServer
from tests.test_history import broadcast, history_server, messages, silent, welcome
from tests.ws_helpers import on_server, recv_json, send_json, wait_until
from wsplugin import History, WebSocketManager
from wsplugin.backends.history_store import MemoryHistory
from wsplugin.history import MAX_OFFSET

CLIENTS = 100
ROOMS_EACH = 40


def memory_store(manager: WebSocketManager) -> MemoryHistory:
    store = manager.broker.history_store()
    assert isinstance(store, MemoryHistory)
    return store


async def visit(server: ThreadServer, tag: str, clients: int, rooms_each: int) -> None:
    """``clients`` short connections, each in ``rooms_each`` distinct history rooms, closed."""

    async def one(i: int) -> None:
        async with connect(f"{server.ws_url}/ws/h-{tag}-{i}-0") as ws:
            hello = await recv_json(ws)
            assert (hello["type"], hello["offset"]) == ("welcome", 0)
            for j in range(1, rooms_each):
                await send_json(ws, {"type": "join", "room": f"h-{tag}-{i}-{j}"})
                joined = await recv_json(ws)
                assert (joined["type"], joined["offset"]) == ("joined", 0), joined

    await asyncio.gather(*(one(i) for i in range(clients)))


async def nobody_left(manager: WebSocketManager) -> bool:
    return not manager.hub.connections


LIMIT = 2_000_000
"""Bytes a run may leave allocated: the room-name cache (bounded at 10,000 names) and the
dicts' grown tables. The old code kept ~2.5 KB per room: 10 MB here."""


@pytest.mark.timeout(120)
async def test_rooms_visited_and_left_leave_nothing_behind() -> None:
    """4,000 distinct history rooms joined by 100 short connections, nobody publishing:
    afterwards no stream is held (node or store) and the memory returns to the start."""
    with history_server(history={"h-*": History(size=100, ttl=60)},
                        rate_limit=None) as (server, manager):
        store = memory_store(manager)
        await visit(server, "warm", 10, 5)  # one-time allocations before the baseline
        await wait_until(lambda: nobody_left(manager), 10, "the warm-up clients to go")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await visit(server, "run", CLIENTS, ROOMS_EACH)
            await wait_until(lambda: nobody_left(manager), 20, "the clients to go")

            async def returned() -> bool:  # closed connections' objects go a bit later
                gc.collect()
                return tracemalloc.get_traced_memory()[0] - before < LIMIT

            try:
                await wait_until(returned, 10, "the memory to return")
            finally:
                grown = tracemalloc.get_traced_memory()[0] - before
                print(f"{CLIENTS * ROOMS_EACH} rooms visited: {grown / 1e6:.2f} MB still "
                      f"allocated, {len(manager.streams.streams)} node streams, "
                      f"{len(store._streams)} stored")
        finally:
            tracemalloc.stop()
        assert (len(manager.streams.streams), store.held) == (0, 0)


async def test_an_empty_rooms_position_recovers() -> None:
    """(epoch, 0) of a room nobody published to: recovered while it stays empty, and
    recovered with every message once some are published (the stream starts from it)."""
    with history_server() as (server, manager):
        ws, hello = await welcome(server, "h-empty")
        position = f"?epoch={hello['epoch']}&offset=0"
        await ws.close()
        await wait_until(lambda: nobody_left(manager), 10, "the client to go")
        assert not manager.streams.streams and memory_store(manager).held == 0
        back, reply = await welcome(server, "h-empty", position)
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (True, hello["epoch"], 0)
        await back.close()
        await wait_until(lambda: nobody_left(manager), 10, "the client to go")
        await broadcast(server, manager, "h-empty", range(1, 4))
        back, reply = await welcome(server, "h-empty", position)
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (True, hello["epoch"], 3)
        assert [f["data"] for f in await messages(back, 3)] == [1, 2, 3]
        assert await silent(back)
        await back.close()


def same_bucket(store: MemoryHistory, room: str, prefix: str) -> str:
    """A room named ``prefix``... whose empty epoch shares ``room``'s bucket."""
    target = hash(room) % store.BUCKETS
    return next(f"{prefix}{i}" for i in range(10**6)
                if hash(f"{prefix}{i}") % store.BUCKETS == target)


async def forget(server: ThreadServer, manager: WebSocketManager, room: str,
                 epoch: str) -> None:
    """Wait until the store forgot ``room``'s stream of ``epoch`` (its meta_ttl is short)."""

    async def gone() -> bool:
        page = await on_server(server, manager.history(room))
        return bool(page.position.epoch != epoch or page.position.offset == 0)

    await wait_until(gone, 10, f"{room}'s stream to be forgotten")


SHORT = {"h-*": History(size=20, ttl=60), "m-*": History(size=20, ttl=0.05, meta_ttl=0.1)}


async def test_a_forgotten_stream_never_recovers_from_an_older_empty_position() -> None:
    """A room published to after the client's (epoch, 0), then forgotten (meta_ttl) and
    published to again: the messages of the forgotten stream are gone, so no recovery."""
    with history_server(history=SHORT) as (server, manager):
        ws, hello = await welcome(server, "m-room")
        await ws.close()
        await wait_until(lambda: nobody_left(manager), 10, "the client to go")
        await broadcast(server, manager, "m-room", range(1, 3))
        page = await on_server(server, manager.history("m-room"))
        assert (page.position.epoch, page.position.offset) == (hello["epoch"], 2)
        await forget(server, manager, "m-room", hello["epoch"])
        for _ in range(2):  # still empty, then with a new stream
            back, reply = await welcome(server, "m-room", f"?epoch={hello['epoch']}&offset=0")
            assert reply["recovered"] is False and reply["epoch"] != hello["epoch"]
            assert await silent(back)
            await back.close()
            await wait_until(lambda: nobody_left(manager), 10, "the client to go")
            await broadcast(server, manager, "m-room", range(1))


async def test_members_of_an_empty_room_keep_its_epoch_when_its_bucket_moves() -> None:
    """Another room of the same bucket is forgotten while members sit in an empty room:
    its first message still continues their position (no reset)."""
    with history_server(history=SHORT) as (server, manager):
        store = memory_store(manager)
        ws, hello = await welcome(server, "h-idle")
        other = same_bucket(store, "h-idle", "m-")
        await broadcast(server, manager, other, range(1))
        first = (await on_server(server, manager.history(other))).position.epoch
        await forget(server, manager, other, first)
        assert store.empty_epoch("h-idle") != hello["epoch"]  # the bucket moved on
        late, reply = await welcome(server, "h-idle")
        assert (reply["epoch"], reply["offset"]) == (hello["epoch"], 0)
        await broadcast(server, manager, "h-idle", range(1, 2))
        for client in (ws, late):
            frame = await recv_json(client)
            assert (frame["type"], frame["offset"]) == ("message", 1), frame
        assert manager.local_stats()["history_resets"] == 0
        for client in (ws, late):
            await client.close()


async def test_offsets_beyond_the_bound() -> None:
    """A recovery from beyond 2**53 - 1 is not recoverable (never an error); history()
    refuses such a ``since``; the admin API answers 422."""
    from tests.admin_helpers import create_app, manager_of

    app = create_app(history={"h-*": History(size=20, ttl=60)})
    manager = manager_of(app)
    with ThreadServer(app) as server:
        await broadcast(server, manager, "h-big", range(1, 3))
        lobby, _ = await welcome(server, "lobby")
        for offset in (MAX_OFFSET, MAX_OFFSET + 1, 10**30):
            await send_json(lobby, {"type": "join", "room": "h-big", "id": 1,
                                    "epoch": "anything", "offset": offset})
            joined = await recv_json(lobby)
            assert (joined["type"], joined["recovered"], joined["offset"]) == (
                "joined", False, 2), joined
            await send_json(lobby, {"type": "leave", "room": "h-big"})
            assert (await recv_json(lobby))["type"] == "left"
        epoch = (await on_server(server, manager.history("h-big"))).position.epoch
        back, reply = await welcome(server, "h-big", f"?epoch={epoch}&offset={MAX_OFFSET + 1}")
        assert (reply["recovered"], reply["offset"]) == (False, 2)
        for since in (-1, MAX_OFFSET + 1, True, 1.0, "1"):
            with pytest.raises(ValueError, match="since"):
                await on_server(server, manager.history("h-big", since=since))  # type: ignore[arg-type]
        page = await on_server(server, manager.history("h-big", since=MAX_OFFSET))
        assert page.messages == () and page.position.offset == 2
        await check_admin_bounds(server, "h-big")
        for client in (lobby, back):
            await client.close()


async def check_admin_bounds(server: ThreadServer, room: str) -> None:
    from tests.admin_helpers import ADMIN, VIEWER

    url = f"{ADMIN}/api/rooms/{room}/history"
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=VIEWER) as http:
        for since in (10**14 - 1, 10**15, MAX_OFFSET):
            response = await http.get(url, params={"since": since})
            assert response.status_code == 200, response.text
            assert all(m["offset"] > since for m in response.json()["messages"])
        for since in (MAX_OFFSET + 1, 10**20, -1):
            response = await http.get(url, params={"since": since})
            assert response.status_code == 422, (since, response.text)
