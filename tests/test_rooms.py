"""The room table: one table of room patterns says what applies to each room.

The shorthands (``client_publish=[...]``, ``history={...}``, ``presence={...}``) build the
same table as ``rooms={...}``; the first matching pattern wins; the compiled table gives
exactly what taking each source's own first match gives (checked with hypothesis against a
reference); history, presence and the publish policy read it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from wsplugin import History, Presence, RoomOptions, WebSocketManager, install_ws_manager
from wsplugin.config import build_settings
from wsplugin.patterns import may_overlap
from wsplugin.rooms.table import RoomTable

ROOMS = ["chat-1", "chat-vip", "lobby", "orders-7", "news", "game-3", "a", "chat-", "x-vip"]


class ChatIn(BaseModel):
    text: str


class ChatOut(BaseModel):
    text: str
    user: str


def manager(**options: Any) -> WebSocketManager:
    return install_ws_manager(FastAPI(), admin_path=None, **options)


def table(**options: Any) -> RoomTable:
    return RoomTable(build_settings(options, env={}))


# ----------------------------------------------------------------------- the shorthands
def test_the_old_keywords_build_the_same_table_as_rooms() -> None:
    history, presence = History(100, 300), Presence(grace=2.0)
    old = manager(client_publish=["chat-*", "lobby"], history={"chat-*": history,
                                                               "orders-*": History(10)},
                  presence={"chat-*": presence})
    new = manager(rooms={
        "chat-*": RoomOptions(client_publish=True, history=history, presence=presence),
        "lobby": RoomOptions(client_publish=True),
        "orders-*": RoomOptions(history=History(10)),
    })
    for room in ROOMS:
        assert old.room_options(room) == new.room_options(room), room
    assert old.room_options("chat-1") == RoomOptions(client_publish=True, history=history,
                                                     presence=presence)
    assert old.room_options("news") == RoomOptions(client_publish=False)
    assert [p for p, _ in old.room_table.entries()] == ["chat-*", "orders-*", "lobby", "*"]


def test_overlapping_shorthands_keep_each_its_own_first_match() -> None:
    """history on every room and presence on chat rooms: chat rooms get both (as before
    the table existed); the table says so with one rule per pattern."""
    m = manager(history={"*": History(5)}, presence={"chat-*": Presence()})
    assert m.room_options("chat-1") == RoomOptions(client_publish=False, history=History(5),
                                                   presence=Presence())
    assert m.room_options("lobby") == RoomOptions(client_publish=False, history=History(5))
    assert [p for p, _ in m.room_table.entries()] == ["chat-*", "*"]


def test_client_publish_true_and_on_message_are_the_defaults_outside_the_patterns() -> None:
    assert manager(client_publish=True).room_options("any").client_publish is True
    hooked = manager(on_message=lambda conn, room, data: data)
    assert hooked.room_options("any").client_publish is True  # the hook decides
    listed = manager(client_publish=["chat-*"], on_message=lambda conn, room, data: data)
    assert listed.room_options("lobby").client_publish is False


# ----------------------------------------------------------------------- first match wins
def test_the_first_matching_pattern_wins_like_a_routing_table() -> None:
    m = manager(rooms={
        "chat-vip": RoomOptions(max_message_bytes=100),
        "chat-*": RoomOptions(client_publish=True, history=History(50), max_message_bytes=4096),
        "*-vip": RoomOptions(rate_limit=(1, 1.0)),
    })
    assert m.room_options("chat-vip") == RoomOptions(client_publish=False,
                                                     max_message_bytes=100)
    assert m.room_options("chat-1") == RoomOptions(client_publish=True, history=History(50),
                                                   max_message_bytes=4096)
    assert m.room_options("x-vip").rate_limit == (1, 1.0)
    assert m.room_options("lobby") == RoomOptions(client_publish=False)


def test_the_table_comes_before_the_shorthands() -> None:
    """What a ``rooms`` pattern sets wins; what it leaves unset comes from the shorthands."""
    m = manager(rooms={"chat-*": RoomOptions(history=History(10), publish=ChatIn)},
                history={"*": History(99)}, presence={"chat-*": Presence()},
                client_publish=["chat-*"])
    assert m.room_options("chat-1") == RoomOptions(
        client_publish=True, history=History(10), presence=Presence(), publish=ChatIn)
    assert m.room_options("lobby") == RoomOptions(client_publish=False, history=History(99))


def test_a_pattern_authorize_overrides_the_global_one() -> None:
    def everyone(identity: Any, room: str) -> bool:
        return True

    def staff(identity: Any, room: str) -> bool:
        return bool(identity == "staff")

    m = manager(authorize=everyone, rooms={"admin-*": RoomOptions(authorize=staff)})
    assert m.room_options("admin-1").authorize is staff
    assert m.room_options("lobby").authorize is everyone


# ----------------------------------------------------------------------- exactness
GLOBS = ["a*", "*b", "ab", "a?", "*", "[ab]*", "?", "b*a", "*c*"]
NAMES = st.text(alphabet="abc", min_size=1, max_size=4)


def _first(pairs: list[tuple[str, Any]], room: str) -> Any:
    return next((v for p, v in pairs if fnmatch.fnmatchcase(room, p)), None)


def _reference(rooms: list[tuple[str, RoomOptions]], history: list[tuple[str, History]],
               presence: list[tuple[str, Presence]], publish: list[str],
               room: str) -> RoomOptions:
    """Each source by its own first match, the table first, then the global settings."""
    chosen = _first(rooms, room) or RoomOptions()
    values = {f.name: getattr(chosen, f.name) for f in dataclasses.fields(RoomOptions)}
    if values["history"] is None:
        values["history"] = _first(history, room)
    if values["presence"] is None:
        values["presence"] = _first(presence, room)
    if values["client_publish"] is None:
        values["client_publish"] = any(fnmatch.fnmatchcase(room, p) for p in publish)
    return RoomOptions(**values)


def _distinct(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return list(dict(reversed(pairs)).items())[::-1]  # the first of each pattern, in order


@settings(max_examples=150, deadline=None)
@given(
    rooms=st.lists(st.tuples(st.sampled_from(GLOBS), st.sampled_from([
        RoomOptions(max_message_bytes=10), RoomOptions(history=History(1)),
        RoomOptions(client_publish=False), RoomOptions(presence=Presence(grace=1.0))])),
        max_size=3),
    history=st.lists(st.tuples(st.sampled_from(GLOBS), st.integers(1, 9).map(History)),
                     max_size=3),
    presence=st.lists(st.tuples(st.sampled_from(GLOBS),
                                st.integers(0, 9).map(lambda n: Presence(max_list=n))),
                      max_size=3),
    publish=st.lists(st.sampled_from(GLOBS), max_size=3, unique=True),
    names=st.lists(NAMES, min_size=1, max_size=10),
)
def test_the_compiled_table_is_each_source_by_its_own_first_match(
    rooms: list[tuple[str, RoomOptions]], history: list[tuple[str, History]],
    presence: list[tuple[str, Presence]], publish: list[str], names: list[str],
) -> None:
    rooms, history, presence = _distinct(rooms), _distinct(history), _distinct(presence)
    compiled = table(rooms=dict(rooms), history=dict(history), presence=dict(presence),
                     client_publish=publish)
    for room in names:
        assert compiled.options(room) == _reference(rooms, history, presence, publish, room), (
            room, compiled.entries())


@pytest.mark.parametrize(("first", "second", "overlap"), [
    ("chat-*", "*-1", True), ("chat-*", "lobby", False), ("a*", "*b", True),
    ("a?", "abc", False), ("[ab]x", "bx", True), ("[!ab]x", "bx", False),
    ("*a*", "*b*", True), ("x*y", "x", False), ("*.*", "ab", False), ("a/b", "a/b", False),
])
def test_two_globs_overlap_when_one_room_name_matches_both(
    first: str, second: str, overlap: bool
) -> None:
    assert may_overlap(first, second) is overlap
    assert may_overlap(second, first) is overlap


# ----------------------------------------------------------------------- typed handlers
def test_a_handler_types_the_rooms_of_its_pattern_and_allows_publishing() -> None:
    m = manager(rooms={"chat-*": RoomOptions(history=History(10))})

    @m.on_publish("chat-*")
    async def chat(conn: Any, room: str, msg: ChatIn) -> ChatOut | None:
        return None

    options = m.room_options("chat-1")
    assert (options.on_publish, options.publish, options.client_publish) == (chat, ChatIn, True)
    assert options.history == History(10)
    assert m.room_options("lobby").on_publish is None


def test_handler_contradictions_raise() -> None:
    m = manager(rooms={"chat-*": RoomOptions(publish=ChatOut), "ro-*":
                       RoomOptions(client_publish=False)})

    async def typed(conn: Any, room: str, msg: ChatIn) -> None:
        return None

    with pytest.raises(ValueError, match="takes ChatIn but publish=ChatOut"):
        m.on_publish("chat-*")(typed)
    with pytest.raises(ValueError, match="client_publish=False"):
        m.on_publish("ro-*")(typed)
    m.on_publish("dm-*")(typed)
    with pytest.raises(ValueError, match="already has a handler"):
        m.on_publish("dm-*")(typed)
    with pytest.raises(TypeError, match="takes \\(connection, room, msg\\)"):
        m.on_publish("other-*")(lambda conn: None)
    assert m.room_options("chat-1").on_publish is None  # a refused handler left no trace

    class Local(BaseModel):  # not visible to get_type_hints from the module
        text: str

    async def unresolved(conn: Any, room: str, msg: Local) -> None:
        return None

    with pytest.raises(TypeError, match="does not resolve"):
        m.on_publish("local-*")(unresolved)


# ----------------------------------------------------------------------- settings
def test_wsplugin_rooms_holds_the_json_options() -> None:
    raw = json.dumps({"chat-*": {"client_publish": True, "history": {"size": 100, "ttl": 300},
                                 "presence": True, "max_message_bytes": 4096,
                                 "rate_limit": [20, 5]},
                      "news": {"presence": {"grace": 1}}})
    s = build_settings({}, env={"WSPLUGIN_ROOMS": raw})
    assert s.rooms == {
        "chat-*": RoomOptions(client_publish=True, history=History(100, 300),
                              presence=Presence(), max_message_bytes=4096, rate_limit=(20, 5.0)),
        "news": RoomOptions(presence=Presence(grace=1)),
    }
    assert list(s.rooms) == ["chat-*", "news"]  # declaration order is kept


@pytest.mark.parametrize(("raw", "message"), [
    ('{"chat-*": {"publish": "ChatIn"}}', "non-JSON field"),
    ('{"chat-*": {"max_message_bytes": 0}}', "max_message_bytes"),
    ('{"chat-*": {"rate_limit": [0, 1]}}', "rate_limit"),
    ('{"chat-*": {"history": {"size": -1}}}', "History.size"),
    ('["chat-*"]', "must map room patterns"),
    ("{not json", "not JSON"),
])
def test_bad_room_options_are_refused_at_start_up(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_settings({}, env={"WSPLUGIN_ROOMS": raw})


@pytest.mark.parametrize("options", [
    {"publish": dict}, {"message": "ChatOut"}, {"client_publish": "yes"},
    {"max_message_bytes": True}, {"history": {"size": 1}}, {"authorize": 3},
    {"rate_limit": (1, 0)},
])
def test_room_options_check_their_fields(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RoomOptions"):
        RoomOptions(**options)


def test_room_options_are_a_frozen_dataclass() -> None:
    options = manager().room_options("lobby")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.client_publish = True  # type: ignore[misc]
    assert RoomOptions(rate_limit=[2, 1]).rate_limit == (2, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid room"):
        manager().room_options("no spaces")


# ----------------------------------------------------------------------- one table
def test_history_presence_and_the_publish_policy_ask_the_table() -> None:
    m = manager(rooms={"h-*": RoomOptions(history=History(7), client_publish=True),
                       "p-*": RoomOptions(presence=Presence(max_list=3))})
    assert m.streams.spec("h-1") == History(7) and m.streams.spec("p-1") is None
    assert m.tracker.spec("p-1") == Presence(max_list=3) and m.tracker.spec("h-1") is None
    assert m.streams.active and m.tracker.active
    assert m.room_options("h-1").client_publish and not m.room_options("p-1").client_publish


def test_the_room_cache_is_bounded() -> None:
    m = manager(rooms={"chat-*": RoomOptions(client_publish=True)})
    for n in range(25_000):
        m.room_options(f"chat-{n}")
    assert len(m.room_table.rules._cache) <= 10_000
