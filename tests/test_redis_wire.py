"""The Redis wire format: one compact header plus the frame, no JSON re-encoding."""

from __future__ import annotations

import pytest

from wsplugin.backends.base import Command
from wsplugin.backends.redis import wire


def test_room_message_round_trip_text() -> None:
    frame = '{"type":"message","room":"r","data":"héllo","sender":null}'
    data = wire.encode_room_message("node1", frame, frozenset({"a", "b"}))
    message = wire.decode_room_message(data)
    assert message.node == "node1"
    assert message.frame == frame
    assert isinstance(message.frame, str)
    assert message.exclude == frozenset({"a", "b"})


def test_room_message_round_trip_binary() -> None:
    frame = bytes(range(256))
    message = wire.decode_room_message(wire.encode_room_message("n", frame, frozenset()))
    assert message.frame == frame
    assert isinstance(message.frame, bytes)
    assert message.exclude == frozenset()


def test_header_is_compact() -> None:
    frame = "x" * 100
    data = wire.encode_room_message("abcdef123456", frame, frozenset())
    assert len(data) - len(frame) == 4 + 1 + 4 + 12 + 4


@pytest.mark.parametrize(
    "command",
    [
        Command("send", "c1", frame='{"a":1}'),
        Command("send", "c1", frame=b"\x00\x01"),
        Command("kick", "c2", reason="bye"),
        Command("join", "c3", room="lobby"),
        Command("leave", "c3", room="lobby"),
        Command("send_user", "", frame='{"a":1}', user="alice"),
        Command("kick_user", "", reason="bye", user="<b>bob</b>"),
    ],
)
def test_request_round_trip(command: Command) -> None:
    request = wire.decode_request(wire.unpack(wire.encode_request("me", "7", command)))
    assert request.reply_to == "me"
    assert request.request_id == "7"
    assert request.command == command


def test_a_request_without_the_user_field_is_read_as_having_none() -> None:
    fields = wire.unpack(wire.encode_request("me", "1", Command("kick", "c", reason="r")))
    request = wire.decode_request(fields[:9])  # what a node without users sends
    assert request.command == Command("kick", "c", reason="r")


def test_a_reply_carries_a_count() -> None:
    assert wire.decode_reply(wire.unpack(wire.encode_reply("4", 17))) == ("4", 17)
    for bad in (b"-1", b"x", b""):
        with pytest.raises(wire.WireError):
            wire.decode_reply([b"R", b"4", bad])


def test_reply_round_trip() -> None:
    assert wire.decode_reply(wire.unpack(wire.encode_reply("9", True))) == ("9", True)
    assert wire.decode_reply(wire.unpack(wire.encode_reply("9", False))) == ("9", False)


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x00\x00\x00\x09abc", b"\x00\x00\x00\x01P"])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_room_message(data)


def test_unknown_op_is_rejected() -> None:
    fields = wire.unpack(wire.encode_request("me", "1", Command("send", "c")))
    fields[3] = b"explode"
    with pytest.raises(wire.WireError):
        wire.decode_request(fields)


def test_publisher_is_read_without_decoding_the_frame() -> None:
    data = wire.encode_room_message("node42", "x" * 1000, frozenset({"c"}))
    assert wire.room_message_node(data) == b"node42"
    with pytest.raises(wire.WireError):
        wire.room_message_node(b"\x00")


def test_history_room_message_head_and_tail() -> None:
    head = wire.encode_stream_head("node1", frozenset({"c2", "c1"}))
    data = head + b'abcd1234 42 {"type":"message","offset":42}'
    assert wire.is_stream_message(data)
    assert not wire.is_stream_message(wire.encode_room_message("n", "x", frozenset()))
    assert wire.room_message_node(data) == b"node1"
    message = wire.decode_stream_message(data)
    assert (message.node, message.exclude, message.epoch, message.offset) == (
        "node1", frozenset({"c1", "c2"}), "abcd1234", 42)
    assert message.frame == '{"type":"message","offset":42}'
    with pytest.raises(wire.WireError):
        wire.decode_stream_message(head + b"abcd1234")
