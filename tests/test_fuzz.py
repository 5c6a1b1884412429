"""Random frames against a real server: never a 1011, never an ERROR log, others unharmed.

Hypothesis throws binary frames, random text, random JSON (with ``NaN``/``Infinity``
tokens), random commands with random fields, and deep nesting at the managed endpoint of a
real uvicorn server. A frame may close the fuzzed client with a documented code (1009 too
big, 4029 rate limit); it then reconnects. After every example a bystander connection
still answers a ``ping``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import ThreadServer
from tests.ws_helpers import make_app

DOCUMENTED_CLOSES = {1009, 4029}  # too big, rate limited
WATCHED_LOGGERS = ("wsplugin", "uvicorn", "asyncio")
MAX_BYTES = 8192
RATE = (200, 100.0)  # burst, messages per second, per connection
BYSTANDER_PERIOD = 2 / RATE[1]  # the bystander stays at half the rate: never limited

Frame = str | bytes

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
           | st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=16,
)
rooms = st.sampled_from(["lobby", "fuzz", "chat-1", "x" * 129, "bad room", "", "é"]) | json_values
command_types = st.sampled_from(["publish", "join", "leave", "ping", "shout", ""]) | json_values
commands = st.fixed_dictionaries(
    {"type": command_types},
    optional={"room": rooms, "data": json_values, "id": json_values},
).map(lambda command: json.dumps(command, allow_nan=True))  # NaN, Infinity, -Infinity


def nested(depth: int, opener: str, closed: bool) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '{"a":' if opener == "{" else "["
    text = inner * depth + "1" + ("}" if opener == "{" else closer) * depth * closed
    return '{"type": "publish", "data": ' + text + ("}" if closed else "")


deep_frames = st.builds(nested, st.integers(1, 3000), st.sampled_from("[{"), st.booleans())
nasty_tokens = st.sampled_from([
    '{"type": "ping", "id": "\\ud800"}', '{"type": "publish", "data": "\\udfff"}',
    '{"type": "ping", "id": 1e999}', '{"type": "publish", "data": -1e400}',
    '{"type": "publish", "data": NaN}', "[" * 100_000, "Infinity", "-Infinity",
    '{"type": "publish", "data": ' + "9" * 5000 + "}", '{"type": "ping", "id": 1', '"',
])
too_big = st.integers(MAX_BYTES - 50, MAX_BYTES + 50).map(
    lambda n: '{"type": "publish", "data": "' + "x" * n + '"}')
frames: st.SearchStrategy[Frame] = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda value: json.dumps(value, allow_nan=True)),
    commands,
    deep_frames,
    nasty_tokens,
    too_big,
)


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_records() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(handler)


class Fuzzer:
    """The fuzzed client (reconnected after a documented close) and the bystander."""

    def __init__(self, server: ThreadServer) -> None:
        self.url = f"{server.ws_url}/ws/lobby"
        self.ids = itertools.count()
        self.stack = contextlib.ExitStack()
        self.client = self.open()
        self.bystander = self.open()
        self.closes: list[int | None] = []
        self.last_bystander_ping = 0.0

    def open(self) -> ClientConnection:
        ws = self.stack.enter_context(connect(self.url, open_timeout=5, max_size=2**22))
        assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        return ws

    def ping(self, ws: ClientConnection) -> None:
        """Ping and read until its pong: every frame sent before it has been handled."""
        marker = f"m{next(self.ids)}"
        ws.send(json.dumps({"type": "ping", "id": marker}))
        while True:
            frame: Any = ws.recv(timeout=10)
            if isinstance(frame, str) and json.loads(frame) == {"type": "pong", "id": marker}:
                return

    def throw(self, batch: list[Frame]) -> None:
        try:
            for frame in batch:
                self.client.send(frame)
            self.ping(self.client)
        except ConnectionClosed:
            code, reason = self.client.close_code, self.client.close_reason
            self.closes.append(code)
            assert code in DOCUMENTED_CLOSES, f"closed with {code} {reason!r}"
            self.client = self.open()
        self.ping_bystander()

    def ping_bystander(self) -> None:
        wait = self.last_bystander_ping + BYSTANDER_PERIOD - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last_bystander_ping = time.monotonic()
        self.ping(self.bystander)

    def close(self) -> None:
        self.stack.close()


@pytest.mark.slow
def test_random_frames_never_break_the_server(error_records: ErrorRecords) -> None:
    app, manager = make_app(client_publish=True, max_message_bytes=MAX_BYTES,
                            max_rooms_per_connection=5, rate_limit=RATE)
    with ThreadServer(app) as server:
        fuzzer = Fuzzer(server)

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(st.lists(frames, min_size=1, max_size=5))
        def check(batch: list[Frame]) -> None:
            fuzzer.throw(batch)
            assert [r.getMessage() for r in error_records.records] == []

        try:
            check()
        finally:
            fuzzer.close()
        assert server.call(manager.stats())["connections"] <= 2
    assert error_records.records == []
