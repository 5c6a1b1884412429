"""History rooms on a real Redis store nothing lasting for rooms nobody published to, and
offsets stay integers however large: two uvicorn servers (two nodes), real clients."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from tests.support import ThreadServer
from tests.test_history import messages, silent, welcome
from tests.test_history_bounds import check_admin_bounds
from tests.test_redis_history import nodes
from tests.ws_helpers import on_server, recv_json, send_json, wait_until
from wsplugin import History
from wsplugin.backends.redis.history import RedisHistory
from wsplugin.history import MAX_OFFSET, META_TTL

pytestmark = [pytest.mark.redis]

DAY_MS = 86_400_000


def history_keys(url: str, prefix: str) -> dict[str, int]:
    """Every history key of ``prefix`` and its PTTL (-1: none)."""
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:hist:*", count=1000))
        return {key.decode(): int(client.pttl(key)) for key in keys}


async def visit_rooms(server: ThreadServer, tag: str, count: int) -> str:
    """One connection joins and leaves ``count`` distinct rooms; the epoch of the first."""
    ws, _ = await welcome(server, "lobby")
    first = ""
    for i in range(count):
        await send_json(ws, {"type": "join", "room": f"h-{tag}-{i}"})
        joined = await recv_json(ws)
        assert (joined["type"], joined["offset"]) == ("joined", 0), joined
        first = first or joined["epoch"]
        await send_json(ws, {"type": "leave", "room": f"h-{tag}-{i}"})
        assert (await recv_json(ws))["type"] == "left"
    await ws.close()
    return first


async def test_joining_rooms_nobody_published_to_stores_nothing_lasting(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix, rate_limit=None) as [(sa, ma), (sb, mb)]:
        await asyncio.gather(visit_rooms(sa, "a", 150), visit_rooms(sb, "b", 150))
        for i in range(20):  # and short connections with the room in the URL
            ws, _ = await welcome(sa if i % 2 else sb, f"h-url-{i}")
            await ws.close()

        async def forgotten() -> bool:  # no node holds a stream for rooms it has nobody in
            return not (ma.hub.connections or mb.hub.connections
                        or ma.streams.streams or mb.streams.streams)

        await wait_until(forgotten, 10, "the nodes to forget the rooms")
        keys = history_keys(redis_url, redis_prefix)
        lasting = {key: ttl for key, ttl in keys.items() if not 0 < ttl <= 60_000}
        assert not lasting, f"{len(lasting)} of {len(keys)} keys outlive a minute"
        assert len(keys) <= 320  # at most one (short-lived) position per room
        await on_server(sb, mb.broadcast("h-a-7", "first"))  # a publish stores for real
        keys = history_keys(redis_url, redis_prefix)
        meta, stream = (f"{redis_prefix}:hist:{{h-a-7}}:{kind}" for kind in ("meta", "stream"))
        assert keys[meta] > META_TTL * 1000 - DAY_MS and 0 < keys[stream] <= 60_000


async def test_an_empty_rooms_position_recovers_on_another_node(
    redis_url: str, redis_prefix: str
) -> None:
    with nodes(redis_url, redis_prefix) as [(sa, ma), (sb, _)]:
        ws, hello = await welcome(sa, "h-quiet")
        await ws.close()
        position = f"?epoch={hello['epoch']}&offset=0"
        back, reply = await welcome(sb, "h-quiet", position)
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (True, hello["epoch"], 0)
        await back.close()
        for i in range(1, 4):
            await on_server(sa, ma.broadcast("h-quiet", i))
        back, reply = await welcome(sb, "h-quiet", position)
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (True, hello["epoch"], 3)
        assert [f["data"] for f in await messages(back, 3)] == [1, 2, 3]
        assert await silent(back)
        await back.close()


async def test_members_keep_an_empty_rooms_position_and_nobody_else_does(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 1 s ``empty_ttl``: the position of a room left by everybody expires; that of
    an empty room with a member is refreshed, and its first message is no reset."""
    monkeypatch.setattr(RedisHistory, "empty_ttl", 1.0)
    with nodes(redis_url, redis_prefix) as [(sa, ma), (sb, mb)]:
        member, hello = await welcome(sa, "h-kept")
        epoch = await visit_rooms(sb, "gone", 1)
        gone = f"{redis_prefix}:hist:{{h-gone-0}}:meta"
        kept = f"{redis_prefix}:hist:{{h-kept}}:meta"

        async def expired() -> bool:
            return gone not in history_keys(redis_url, redis_prefix)

        await wait_until(expired, 10, "the left room's position to expire")
        with redis.Redis.from_url(redis_url) as client:
            assert client.hgetall(kept) == {b"epoch": hello["epoch"].encode(), b"offset": b"0"}
            assert 0 < client.pttl(kept) <= 1000
        assert epoch  # the left room did have a position
        await on_server(sb, mb.broadcast("h-kept", "first"))
        frame = await recv_json(member)
        assert (frame["type"], frame["offset"], frame["data"]) == ("message", 1, "first")
        assert ma.local_stats()["history_resets"] == 0
        back, reply = await welcome(sb, "h-kept", f"?epoch={hello['epoch']}&offset=0")
        assert (reply["recovered"], reply["offset"]) == (True, 1)
        assert [f["data"] for f in await messages(back, 1)] == ["first"]
        for ws in (member, back):
            await ws.close()


async def test_offsets_stay_integers_beyond_10_to_the_14(
    redis_url: str, redis_prefix: str
) -> None:
    """Lua writes 10**14 as ``1e+14``: every offset the scripts format is an integer."""
    from tests.admin_helpers import create_app, manager_of

    app = create_app(backend=redis_url, redis_prefix=redis_prefix,
                     history={"h-*": History(size=10, ttl=60)})
    manager = manager_of(app)
    with ThreadServer(app) as server:
        await check_admin_bounds(server, "h-huge")
        with redis.Redis.from_url(redis_url) as client:
            client.hset(f"{redis_prefix}:hist:{{h-huge}}:meta",
                        mapping={"epoch": "abcdef01", "offset": 10**14 - 1})
        ws, hello = await welcome(server, "h-huge")
        assert (hello["epoch"], hello["offset"]) == ("abcdef01", 10**14 - 1)
        await on_server(server, manager.broadcast("h-huge", "big"))
        raw = await asyncio.wait_for(ws.recv(), 5)
        assert json.loads(raw)["offset"] == 10**14 and '"offset":100000000000000}' in raw
        page = await on_server(server, manager.history("h-huge", since=10**14 - 1))
        assert [m.offset for m in page.messages] == [10**14]
        assert page.position.offset == 10**14
        await check_admin_bounds(server, "h-huge")
        lobby, _ = await welcome(server, "lobby")
        for offset in (10**14 - 1, MAX_OFFSET, MAX_OFFSET + 1, 10**30):
            await send_json(lobby, {"type": "join", "room": "h-huge", "epoch": "abcdef01",
                                    "offset": offset})
            joined = await recv_json(lobby)
            assert (joined["type"], joined["recovered"], joined["offset"]) == (
                "joined", offset == 10**14 - 1, 10**14), joined
            if joined["recovered"]:
                assert [f["data"] for f in await messages(lobby, 1)] == ["big"]
            await send_json(lobby, {"type": "leave", "room": "h-huge"})
            assert (await recv_json(lobby))["type"] == "left"
        back, reply = await welcome(server, "h-huge", f"?epoch=abcdef01&offset={MAX_OFFSET}")
        assert (reply["recovered"], reply["offset"]) == (False, 10**14)
        assert manager.local_stats()["history_resets"] == 0
        for client in (ws, lobby, back):
            await client.close()
