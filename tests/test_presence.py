"""Presence on one node (memory://), against a real uvicorn server with real clients.

Users are per user, not per connection: a second tab, a reload within ``grace`` and a
reconnect emit nothing; joins and leaves reach members batched, one ``presence_diff`` per
``presence_interval``. Cluster-wide presence (Redis) is in tests/test_presence_redis.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support import ThreadServer
from tests.ws_helpers import (
    on_server,
    open_client,
    recv_json,
    recv_type,
    send_json,
    serve,
    wait_until,
)
from wsplugin import Event, Presence, User
from wsplugin.presence import PresenceStats, UserPresence

GRACE = 0.5
INTERVAL = 0.1


def by_header(websocket: Any) -> Any:
    """authenticate: the user from the ``x-user`` header (``name`` in the info), or anonymous."""
    user = websocket.headers.get("x-user")
    if user is None:
        return "anonymous-identity-object" if websocket.headers.get("x-anon") else object()
    return User(user, {"name": user.title()})


def presence_server(**options: Any) -> Any:
    options.setdefault("presence", {"chat-*": Presence(grace=GRACE)})
    options.setdefault("presence_interval", INTERVAL)
    return serve(authenticate=by_header, **options)


async def join_as(server: ThreadServer, user: str | None, room: str = "chat-1"
                  ) -> tuple[ClientConnection, str, dict[str, Any]]:
    """Open a client of ``user`` (None: no user) on ``room``: the socket, id and snapshot."""
    headers = {} if user is None else {"x-user": user}
    ws, conn_id = await open_client(server, room, additional_headers=headers)
    snapshot = await recv_json(ws)
    assert snapshot["type"] == "presence", snapshot
    return ws, conn_id, snapshot


async def diffs_until_quiet(ws: ClientConnection, quiet: float = 3 * INTERVAL + GRACE
                            ) -> list[dict[str, Any]]:
    """Every ``presence_diff`` ``ws`` gets until nothing arrived for ``quiet`` seconds."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), quiet))
        except TimeoutError:
            return frames
        if frame["type"] == "presence_diff":
            frames.append(frame)


async def test_the_joiner_gets_a_snapshot_after_its_welcome() -> None:
    with presence_server() as (server, _):
        ws_a, _, first = await join_as(server, "ann")
        assert first == {"type": "presence", "room": "chat-1",
                         "users": {"ann": {"connections": 1, "info": {"name": "Ann"}}},
                         "count": {"users": 1, "connections": 1}}
        ws_b, _, second = await join_as(server, "bob")
        assert second["users"] == {"ann": {"connections": 1, "info": {"name": "Ann"}},
                                   "bob": {"connections": 1, "info": {"name": "Bob"}}}
        ws_anon, _, third = await join_as(server, None)
        assert third["count"] == {"users": 2, "connections": 3}  # no user: connections only
        assert set(third["users"]) == {"ann", "bob"}
        for ws in (ws_a, ws_b, ws_anon):
            await ws.close()


async def test_two_tabs_of_one_user_are_one_join_and_one_leave_after_grace() -> None:
    with presence_server() as (server, manager):
        watcher, _, _ = await join_as(server, "watcher")
        await diffs_until_quiet(watcher)  # its own join (already in its snapshot)
        tab1, _, _ = await join_as(server, "ann")
        tab2, _, snapshot = await join_as(server, "ann")
        assert snapshot["users"]["ann"]["connections"] == 2
        diffs = await diffs_until_quiet(watcher)
        assert diffs == [{"type": "presence_diff", "room": "chat-1",
                          "joins": {"ann": {"info": {"name": "Ann"}}}, "leaves": {}}]
        await tab1.close()  # one tab closed: no leave
        assert await diffs_until_quiet(watcher) == []
        users = await on_server(server, manager.presence("chat-1"))
        assert users["ann"] == UserPresence(1, {"name": "Ann"})
        started = time.monotonic()
        await tab2.close()  # both closed: one leave, after the grace
        diff = await recv_type(watcher, "presence_diff", 5)
        assert time.monotonic() - started >= GRACE * 0.9
        assert diff["leaves"] == {"ann": {}} and diff["joins"] == {}
        assert await diffs_until_quiet(watcher) == []
        assert await on_server(server, manager.presence_stats("chat-1")) == PresenceStats(1, 1)
        await watcher.close()


async def test_a_reload_within_grace_emits_nothing() -> None:
    events: list[Event] = []
    with presence_server() as (server, manager):
        manager.events.subscribe(events.append)
        watcher, _, _ = await join_as(server, "watcher")
        ann, _, _ = await join_as(server, "ann")
        await diffs_until_quiet(watcher)
        await ann.close()
        await asyncio.sleep(GRACE / 3)
        ann_again, _, snapshot = await join_as(server, "ann")  # the reload
        assert snapshot["users"]["ann"]["connections"] == 1
        assert await diffs_until_quiet(watcher) == []
        kinds = [(e.kind, e.user) for e in events if e.kind.startswith("user_")]
        assert kinds == [("user_joined", "watcher"), ("user_joined", "ann")]
        await ann_again.close()
        await watcher.close()


async def test_room_occupied_and_vacated_events_once() -> None:
    events: list[Event] = []
    with presence_server() as (server, manager):
        manager.events.subscribe(events.append)
        a, _, _ = await join_as(server, "ann")
        b, _, _ = await join_as(server, None)
        await a.close()
        await b.close()
        await wait_until(lambda: _kinds_in(events, "room_vacated"), 5, "room_vacated")
        kinds = [e.kind for e in events if e.kind.startswith("room_")]
        assert kinds == ["room_occupied", "room_vacated"]
        joined = next(e for e in events if e.kind == "user_joined")
        assert (joined.room, joined.user, joined.info) == ("chat-1", "ann", {"name": "Ann"})


async def _kinds_in(events: list[Event], kind: str) -> bool:
    return any(e.kind == kind for e in events)


async def test_presence_and_stats_on_request_members_only() -> None:
    with presence_server(client_publish=True) as (server, _):
        ann, _, _ = await join_as(server, "ann")
        await send_json(ann, {"type": "presence", "room": "chat-1", "id": 7})
        frame = await recv_type(ann, "presence")
        assert frame["id"] == 7 and set(frame["users"]) == {"ann"}
        await send_json(ann, {"type": "presence_stats", "room": "chat-1", "id": 8})
        assert await recv_type(ann, "presence_stats") == {
            "type": "presence_stats", "room": "chat-1", "users": 1, "connections": 1, "id": 8}
        for kind in ("presence", "presence_stats"):  # not a member of chat-2
            await send_json(ann, {"type": kind, "room": "chat-2", "id": 9})
            error = await recv_type(ann, "error")
            assert (error["code"], error["id"]) == ("not_joined", 9)
        await send_json(ann, {"type": "join", "room": "plain", "id": 10})
        assert (await recv_type(ann, "joined"))["id"] == 10
        await send_json(ann, {"type": "presence", "room": "plain", "id": 11})
        assert (await recv_type(ann, "error"))["code"] == "no_presence"
        await ann.close()


async def test_a_join_command_gets_the_snapshot_after_joined() -> None:
    with presence_server() as (server, _):
        ann, _ = await open_client(server, "lobby", additional_headers={"x-user": "ann"})
        await send_json(ann, {"type": "join", "room": "chat-9", "id": 1})
        assert (await recv_json(ann))["type"] == "joined"
        snapshot = await recv_json(ann)
        assert snapshot["type"] == "presence" and snapshot["room"] == "chat-9"
        await ann.close()


async def test_over_max_list_only_counts() -> None:
    with presence_server(presence={"chat-*": Presence(max_list=2)}) as (server, _):
        clients = [await join_as(server, f"u{i}") for i in range(3)]
        last = clients[-1][2]
        assert last == {"type": "presence", "room": "chat-1", "truncated": True,
                        "count": {"users": 3, "connections": 3}}
        for ws, _, _ in clients:
            await ws.close()


async def test_join_leave_off_sends_no_diff() -> None:
    options = {"presence": {"chat-*": Presence(join_leave=False, grace=GRACE)}}
    with presence_server(**options) as (server, _):
        watcher, _, _ = await join_as(server, "watcher")
        ann, _, _ = await join_as(server, "ann")
        await ann.close()
        assert await diffs_until_quiet(watcher) == []  # not even its own join
        await watcher.close()


def apply(state: dict[str, Any], diff: dict[str, Any]) -> None:
    """What a client does with a ``presence_diff``: its synced set of users and their info."""
    for user, entry in diff["joins"].items():
        state[user] = entry["info"]
    for user in diff["leaves"]:
        state.pop(user, None)


async def test_mass_reconnect_costs_each_member_a_few_frames() -> None:
    members, observers = 500, 5
    with presence_server(presence={"chat-*": Presence(grace=5.0)}) as (server, manager):
        watching = [await join_as(server, f"observer{i}") for i in range(observers)]
        states = [{u: e["info"] for u, e in snap["users"].items()} for _, _, snap in watching]
        clients = await asyncio.gather(*(join_as(server, f"u{i}") for i in range(members)))
        for (ws, _, _), state in zip(watching, states, strict=True):
            for diff in await diffs_until_quiet(ws):
                apply(state, diff)
        started = time.monotonic()
        await asyncio.gather(*(ws.close() for ws, _, _ in clients))
        again = await asyncio.gather(*(join_as(server, f"u{i}") for i in range(members)))
        await asyncio.gather(*(ws.close() for ws, _, _ in again[: members // 2]))  # half go
        duration = time.monotonic() - started
        server_state = {u: p.info for u, p in (await on_server(
            server, manager.presence("chat-1"))).items()}
        received = await asyncio.gather(  # until the grace of those who went is over
            *(diffs_until_quiet(ws, quiet=6.0) for ws, _, _ in watching))
        final = {u: p.info for u, p in (await on_server(
            server, manager.presence("chat-1"))).items()}
        for frames, state in zip(received, states, strict=True):
            assert len(frames) <= math.ceil(duration / INTERVAL) + 2 + 1  # +1: their leave
            for diff in frames:
                apply(state, diff)
            assert state == final
        assert len(final) == observers + members // 2
        assert len(server_state) == observers + members  # within the grace: all still in
        await asyncio.gather(*(ws.close() for ws, _, _ in [*again, *watching]))


def test_bad_presence_settings_are_refused() -> None:
    from wsplugin.config import build_settings

    with pytest.raises(ValueError, match="grace"):
        build_settings({"presence": {"x": Presence(grace=-1)}})
    with pytest.raises(ValueError, match="presence"):
        build_settings({"presence": {"x": 3}})
    settings = build_settings({}, env={"WSPLUGIN_PRESENCE": "chat-*,room-?"})
    assert settings.presence == {"chat-*": Presence(), "room-?": Presence()}
    settings = build_settings({}, env={"WSPLUGIN_PRESENCE": '{"chat-*": {"grace": 2}}'})
    assert settings.presence == {"chat-*": Presence(grace=2)}


async def test_manager_presence_refuses_a_room_without_presence() -> None:
    with presence_server() as (server, manager), pytest.raises(ValueError, match="no presence"):
        await on_server(server, manager.presence("lobby"))




async def test_metrics_count_users_presence_rooms_and_diff_frames() -> None:
    from tests.test_metrics import PATH, scrape, value

    with presence_server(metrics_path=PATH) as (server, _):
        watcher, _, _ = await join_as(server, "watcher")
        tabs = [await join_as(server, "ann") for _ in range(2)]
        await join_as(server, "bob", room="chat-2")
        anon, _ = await open_client(server, "lobby")
        await diffs_until_quiet(watcher)
        samples = await scrape(server)
        assert value(samples, "wsplugin_users_online") == 3  # watcher, ann (2 tabs), bob
        assert value(samples, "wsplugin_presence_rooms") == 2  # chat-1, chat-2; not lobby
        # watcher got its own join and ann's (one frame); each tab of ann one frame or none
        assert value(samples, "wsplugin_presence_diffs_total") >= 1
        for ws, _, _ in tabs:
            await ws.close()
        await recv_type(watcher, "presence_diff", 5)
        after = await scrape(server)
        assert value(after, "wsplugin_presence_diffs_total") > value(
            samples, "wsplugin_presence_diffs_total")
        assert value(after, "wsplugin_users_online") == 2
        await anon.close()
        await watcher.close()
