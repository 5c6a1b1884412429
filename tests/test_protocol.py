"""The wire protocol: frames, close codes, error words, room names, command parsing."""

from __future__ import annotations

import json

import pytest

from wsplugin import protocol as p
from wsplugin.protocol import CloseCode, ProtocolError


def test_close_codes_are_the_documented_numbers() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000, "GOING_AWAY": 1001, "POLICY": 1008, "TOO_BIG": 1009,
        "INTERNAL": 1011, "SERVICE_RESTART": 1012, "KICKED": 4000, "UNAUTHORIZED": 4001,
        "FORBIDDEN": 4003, "TOO_SLOW": 4008, "RATE_LIMITED": 4029,
    }


def test_error_words_are_stable() -> None:
    words = [p.BAD_JSON, p.UNKNOWN_TYPE, p.BAD_REQUEST, p.NOT_JOINED, p.FORBIDDEN,
             p.BAD_ROOM, p.TOO_MANY_ROOMS, p.REJECTED, p.UNAUTHORIZED]
    assert words == ["bad_json", "unknown_type", "bad_request", "not_joined", "forbidden",
                     "bad_room", "too_many_rooms", "rejected", "unauthorized"]


@pytest.mark.parametrize("room", ["a", "lobby", "A-Z_a.z:0-9", "x" * 128, "team:42.general"])
def test_valid_room_names(room: str) -> None:
    assert p.is_valid_room(room)
    assert p.check_room(room) == room


@pytest.mark.parametrize("room", ["", "x" * 129, "a b", "a/b", "é", "room!", "a\n", "%41"])
def test_invalid_room_names_are_bad_room(room: str) -> None:
    assert not p.is_valid_room(room)
    with pytest.raises(ProtocolError) as info:
        p.check_room(room)
    assert info.value.code == "bad_room"


@pytest.mark.parametrize("room", [None, 42, ["a"], {"a": 1}])
def test_non_string_room_is_bad_request(room: object) -> None:
    assert not p.is_valid_room(room)
    with pytest.raises(ProtocolError) as info:
        p.check_room(room)
    assert info.value.code == "bad_request"


def test_message_frame_is_the_envelope() -> None:
    frame = json.loads(p.message_frame("lobby", {"text": "hé"}, "abc"))
    assert frame == {"type": "message", "room": "lobby", "data": {"text": "hé"}, "sender": "abc"}


def test_message_frame_keeps_unicode_and_is_compact() -> None:
    text = p.message_frame(None, "hé ☃", None)
    assert "hé ☃" in text
    assert ", " not in text and ": " not in text
    assert json.loads(text) == {"type": "message", "room": None, "data": "hé ☃", "sender": None}


def test_message_frame_refuses_nan() -> None:
    with pytest.raises(ValueError):
        p.message_frame("a", float("nan"), None)


def test_reply_echoes_id_only_when_given() -> None:
    assert json.loads(p.reply("pong")) == {"type": "pong"}
    assert json.loads(p.reply("pong", 7)) == {"type": "pong", "id": 7}
    assert json.loads(p.reply("joined", "x", room="r")) == {"type": "joined", "room": "r",
                                                              "id": "x"}


def test_error_frame() -> None:
    frame = json.loads(p.error_frame("bad_json", "nope", "c1"))
    assert frame == {"type": "error", "code": "bad_json", "detail": "nope", "id": "c1"}


def test_parse_command_accepts_an_object_with_a_type() -> None:
    assert p.parse_command('{"type": "ping", "id": 1}') == {"type": "ping", "id": 1}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "bad_json"),
        ("", "bad_json"),
        ("not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        ('"ping"', "bad_request"),
        ("42", "bad_request"),
        ("null", "bad_request"),
        ("{}", "bad_request"),
        ('{"type": 5}', "bad_request"),
        ('{"type": null}', "bad_request"),
    ],
)
def test_parse_command_errors(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_command(text)
    assert info.value.code == code
    assert info.value.detail


# ------------------------------------------------------------------------ strict JSON
@pytest.mark.parametrize(
    "text",
    [
        '{"type": "publish", "data": NaN}',
        '{"type": "publish", "data": Infinity}',
        '{"type": "publish", "data": -Infinity}',
        '{"type": "ping", "id": [1, NaN]}',
        '{"type": "publish", "data": 1e400}',
        '{"type": "publish", "data": -1e400}',
        '{"type": "publish", "data": %s.0}' % ("9" * 400),
        '{"type": "ping", "id": "\\ud800"}',
        '{"type": "ping", "id": "\\udc00\\ud83d"}',
        '{"type": "ping", "\\udfff": 1}',
        '{"type": "publish", "data": %s}' % ("1" * 5000),
    ],
    ids=["nan", "infinity", "minus_infinity", "nested_nan", "overflow", "minus_overflow",
         "long_overflow", "lone_high_surrogate", "reversed_pair", "surrogate_key", "huge_int"],
)
def test_non_strict_json_is_bad_json(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_command(text)
    assert info.value.code == "bad_json"
    assert info.value.detail.startswith("frame is not valid JSON")


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    command = p.parse_command('{"type": "ping", "id": "\\ud83d\\ude00 \\\\ud800"}')
    assert command["id"] == "\U0001f600 \\ud800"


def deep(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def test_nesting_up_to_the_limit_is_accepted() -> None:
    text = '{"type": "publish", "data": ' + deep(p.MAX_NESTING - 1) + "}"
    data = p.parse_command(text)["data"]
    for _ in range(p.MAX_NESTING - 1):
        (data,) = data
    assert data == 1


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "publish", "data": ' + deep(p.MAX_NESTING) + "}",
        deep(100_000),
        "[" * 100_000,
        "{" * 100_000,
        '{"a":' * 65 + "1" + "}" * 65,
    ],
    ids=["one_too_deep", "deep_array", "unclosed_arrays", "unclosed_objects", "deep_objects"],
)
def test_deeper_nesting_is_bad_json_before_parsing(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_command(text)
    assert info.value.code == "bad_json"
    assert str(p.MAX_NESTING) in info.value.detail


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"type": "publish", "data": ["[" * 500, "{" * 500, '"[\\' * 100]})
    assert p.parse_command(text)["data"][0] == "[" * 500
    assert not p.nests_deeper_than(text)


def test_many_shallow_brackets_are_fine() -> None:
    text = json.dumps({"type": "publish", "data": [[i, {"k": [i]}] for i in range(2000)]})
    assert len(p.parse_command(text)["data"]) == 2000


@pytest.mark.parametrize("text", ['"\\"' * 20_000 + "[" * 70, '"' + "\\" * 50_001,
                                  '["' * 40_000])
def test_the_depth_scan_copes_with_hostile_text(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_command(text)
    assert info.value.code == "bad_json"
