"""What the fast path slims in uvicorn's protocol objects (``wsplugin/delivery/uvicorn_idle.py``)
still works, and uvicorn uses no more of it than the slimmed parts support (a canary)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections import deque
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from tests.support import ThreadServer
from tests.ws_helpers import make_app, recv_json, recv_type, send_json, wait_until
from wsplugin.delivery.uvicorn_idle import (
    NEVER_JOINED,
    NO_PUTTERS,
    SMALL,
    SlimQueue,
    SmallDeque,
    slim_event,
    slim_queue,
)
from wsplugin.delivery.uvicorn_writer import PROTOCOLS, SANSIO_MODULE, WSPROTO_MODULE

HINT = f"(uvicorn {uvicorn.__version__}): update wsplugin/delivery/uvicorn_idle.py"
CLASSES = {SANSIO_MODULE: "WebSocketsSansIOProtocol", WSPROTO_MODULE: "WSProtocol"}
QUEUE_METHODS = {"put_nowait", "get", "get_nowait", "empty", "qsize", "full"}
"""What the slimmed receive queue supports: everything but waiting for room and joining."""
EVENT_METHODS = {"set", "clear", "is_set", "wait"}


def held_on(queue: Any) -> Any:
    """The type of what a queue's messages wait on."""
    return type(queue._queue)


# ---------------------------------------------------------------- asyncio's side
async def test_a_slimmed_queue_keeps_the_order_and_wakes_its_readers() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    slim_queue(queue)
    parts: Any = queue
    assert type(parts._getters) is SmallDeque and type(parts._queue) is SmallDeque
    assert parts._putters is NO_PUTTERS and parts._finished is NEVER_JOINED
    assert list(parts._queue) == [1]  # what was queued before stays
    queue.put_nowait(2)
    assert (queue.qsize(), queue.empty(), queue.full()) == (2, False, False)
    assert [await queue.get(), queue.get_nowait()] == [1, 2]
    readers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(parts._getters) == 3
    readers[0].cancel()  # a cancelled reader leaves the line; the others are served in order
    await asyncio.sleep(0)
    for item in (10, 11):
        queue.put_nowait(item)
    assert await asyncio.gather(*readers[1:]) == [10, 11]
    assert not parts._getters and not parts._queue
    await queue.put(3)  # unbounded: never waits for room
    queue.task_done()
    assert not NO_PUTTERS and not NEVER_JOINED._waiters


async def test_a_burst_of_messages_waits_on_a_deque_not_on_the_small_list() -> None:
    """A client can put thousands of frames into its queue in one read: ``pop(0)`` over
    a list of them would cost O(n) per message (a few KB of 6-byte frames, seconds of
    CPU). The messages move to a deque while more than a few wait, and back after."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    slim_queue(queue)
    assert type(queue) is SlimQueue
    for item in range(SMALL - 1):
        queue.put_nowait(item)
    assert held_on(queue) is SmallDeque  # a few: the small list
    for item in range(SMALL - 1, 20_000):
        queue.put_nowait(item)
    assert held_on(queue) is deque and queue.qsize() == 20_000
    assert [queue.get_nowait() for _ in range(20_000)] == list(range(20_000))
    assert held_on(queue) is SmallDeque and queue.empty()  # read: small again
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(7)
    assert await reader == 7


async def test_joining_a_slimmed_queue_fails_loudly_and_bounded_queues_are_left_alone() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    slim_queue(queue)
    queue.put_nowait(1)
    with pytest.raises(RuntimeError, match="join"):
        await queue.join()
    with pytest.raises(RuntimeError, match="putters"):
        NO_PUTTERS.append(None)
    bounded: asyncio.Queue[int] = asyncio.Queue(1)
    slim_queue(bounded)
    assert type(bounded._putters) is deque  # type: ignore[attr-defined]
    assert bounded._finished is not NEVER_JOINED  # type: ignore[attr-defined]


async def test_a_slimmed_event_wakes_every_waiter() -> None:
    event = asyncio.Event()
    event.set()
    slim_event(event)
    parts: Any = event
    assert type(parts._waiters) is SmallDeque
    event.clear()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[1].cancel()
    await asyncio.sleep(0)
    event.set()
    assert list(await asyncio.gather(waiters[0], waiters[2])) == [True, True]
    assert not parts._waiters


# ---------------------------------------------------------------- uvicorn's side (canary)
@pytest.mark.parametrize("module_name", sorted(CLASSES))
def test_uvicorn_uses_only_what_the_slimmed_queue_and_event_support(module_name: str) -> None:
    cls = getattr(importlib.import_module(module_name), CLASSES[module_name])
    source = inspect.getsource(cls)
    assert re.search(r"self\.queue(: [^=]+)? = asyncio\.Queue\(\)", source), (
        f"{cls.__name__}'s receive queue is no longer an unbounded asyncio.Queue {HINT}")
    used = set(re.findall(r"self\.queue\.(\w+)", source))
    assert used <= QUEUE_METHODS, f"{cls.__name__} uses queue.{sorted(used - QUEUE_METHODS)} {HINT}"
    used = set(re.findall(r"self\.writable\.(\w+)", source))
    assert used <= EVENT_METHODS, f"{cls.__name__} uses writable.{sorted(used - EVENT_METHODS)}"


def test_uvicorn_reads_the_sansio_handshake_request_nowhere() -> None:
    """The fast path empties the request's headers: uvicorn only stores the request
    (``handle_connect``) and reads the scope's own copy of the headers afterwards."""
    cls = getattr(importlib.import_module(SANSIO_MODULE), CLASSES[SANSIO_MODULE])
    uses = re.findall(r"self\.request\b(.{0,3})", inspect.getsource(cls))
    assert uses == [" = "], f"{cls.__name__} now reads self.request {HINT}"


def test_websockets_reads_the_offered_extensions_only_to_negotiate() -> None:
    """The fast path sets ``available_extensions`` to ``None`` once the websocket is open."""
    server = importlib.import_module("websockets.server").ServerProtocol
    readers = {name for name, member in vars(server).items() if inspect.isfunction(member)
               and "self.available_extensions" in inspect.getsource(member)}
    assert readers == {"__init__", "process_extensions"}, (
        f"websockets' ServerProtocol reads available_extensions in {sorted(readers)}")


def test_wsproto_leaves_the_handshake_alone_once_the_websocket_is_open() -> None:
    """After the handshake, wsproto's ``WSConnection`` asks its handshake object only for
    (no) events: its h11 connection and request, which the fast path drops, are unused."""
    wsproto = importlib.import_module("wsproto")
    handshake = importlib.import_module("wsproto.handshake").H11Handshake
    for method in ("send", "receive_data"):
        source = inspect.getsource(getattr(wsproto.WSConnection, method))
        assert "if self.connection is None:" in source, f"WSConnection.{method} changed"
    events = inspect.getsource(wsproto.WSConnection.events)
    assert "self.handshake.events()" in events
    assert "_h11_connection" not in inspect.getsource(handshake.events)


# ---------------------------------------------------------------- a live connection
@pytest.mark.timeout(60)
@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_a_slimmed_connection_reads_writes_answers_pings_and_closes(ws: str) -> None:
    """Keepalive pings every 50 ms, a publish both ways, compressed and plain clients,
    a close by the client and one by the server, on protocols slimmed after accept."""
    app, manager = make_app(rate_limit=None, client_publish=True)
    with ThreadServer(app, ws=ws, ws_ping_interval=0.05, ws_ping_timeout=5) as server:
        plain = await connect(f"{server.ws_url}/ws/r", compression=None)
        deflate = await connect(f"{server.ws_url}/ws/r", user_agent_header="probe/1")
        ids = [(await recv_json(client))["connection_id"] for client in (plain, deflate)]
        conns = [manager.hub.connections[i] for i in ids]
        protocols: list[Any] = [conn.frames.protocol for conn in conns]  # type: ignore[attr-defined]
        flavour = PROTOCOLS[type(protocols[0]).__module__]
        for protocol in protocols:
            assert type(protocol.queue._getters) is SmallDeque
            assert protocol.queue._putters is NO_PUTTERS
            assert type(protocol.writable._waiters) is SmallDeque
            if flavour.handshake_answer:
                assert not protocol.request.headers
                assert protocol.conn.available_extensions is None
            else:
                assert protocol.conn.handshake._h11_connection is None
        assert conns[1].user_agent == "probe/1"  # the scope's headers are intact

        async def pinged() -> bool:
            return all(protocol.last_ping_rtt > 0 for protocol in protocols)

        await wait_until(pinged, what="keepalive pings answered")
        for sender, receiver in ((plain, deflate), (deflate, plain)):
            for i in range(20):
                await send_json(sender, {"type": "publish", "data": {"i": i}})
            for i in range(20):
                assert (await recv_type(receiver, "message"))["data"] == {"i": i}
        await send_json(deflate, {"type": "ping", "id": 1})
        assert (await recv_type(deflate, "pong"))["id"] == 1
        await plain.close()
        server.call(manager.kick(ids[1], reason="bye"))
        await deflate.wait_closed()
        assert deflate.close_code == 4000

        async def gone() -> bool:
            return not manager.hub.connections

        await wait_until(gone, what="both connections to end")
    assert not NO_PUTTERS and not NEVER_JOINED._waiters
