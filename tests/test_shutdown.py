"""Reaching and aborting a server's transport at shutdown (``wsplugin/endpoint/shutdown.py``).

The servers themselves are exercised in ``tests/test_servers.py``; here, the lookup rules.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wsplugin.delivery.uvicorn_writer import RAW_SEND_KEY
from wsplugin.endpoint.shutdown import abandon_later, server_transport


class Transport:
    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


class UvicornLike:
    def __init__(self) -> None:
        self.transport = Transport()

    async def send(self, message: Any) -> None: ...


class Writer:
    def __init__(self) -> None:
        self.transport = Transport()


class TCPServerLike:
    def __init__(self) -> None:
        self.writer = Writer()

    async def protocol_send(self, event: Any) -> None: ...


class Hop:
    """hypercorn: a stream whose ``send`` is a bound method of the next object."""

    def __init__(self, send: Any) -> None:
        self.send = send

    async def app_send(self, message: Any) -> None: ...


def test_uvicorn_protocol_transport() -> None:
    protocol = UvicornLike()
    assert server_transport({RAW_SEND_KEY: protocol.send}) is protocol.transport


def test_hypercorn_send_chain() -> None:
    tcp = TCPServerLike()
    stream = Hop(Hop(tcp.protocol_send).app_send)
    assert server_transport({RAW_SEND_KEY: stream.app_send}) is tcp.writer.transport


def test_no_transport() -> None:
    async def plain_send(message: Any) -> None: ...

    assert server_transport({}) is None
    assert server_transport({RAW_SEND_KEY: plain_send}) is None
    assert server_transport({RAW_SEND_KEY: Hop(None).app_send}) is None


async def test_abandon_later_aborts_after_the_delay() -> None:
    protocol = UvicornLike()
    abandon_later({RAW_SEND_KEY: protocol.send}, delay=0.05)
    assert protocol.transport.aborted == 0
    await asyncio.sleep(0.1)
    assert protocol.transport.aborted == 1
    abandon_later({}, delay=0.0)  # nothing to abort: nothing scheduled, no error


class Buffered(Transport):
    def __init__(self, pending: int) -> None:
        super().__init__()
        self.pending = pending

    def get_write_buffer_size(self) -> int:
        return self.pending


async def test_abandon_later_leaves_a_transport_with_nothing_to_write_alone() -> None:
    """The usual end: nothing left to flush, so no timer per connection; a transport that
    still holds bytes (a peer that stopped reading) is aborted after the delay."""
    loop = asyncio.get_running_loop()
    idle, stuck = UvicornLike(), UvicornLike()
    idle.transport, stuck.transport = Buffered(0), Buffered(4096)
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    abandon_later({RAW_SEND_KEY: idle.send}, delay=0.05)
    assert len(loop._scheduled) == timers  # type: ignore[attr-defined]
    abandon_later({RAW_SEND_KEY: stuck.send}, delay=0.05)
    await asyncio.sleep(0.1)
    assert (idle.transport.aborted, stuck.transport.aborted) == (0, 1)
