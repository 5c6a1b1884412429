"""Less memory per idle connection in what uvicorn's protocol object holds.

An idle websocket costs uvicorn's protocol about 12 KB of Python objects, more than
wsplugin's own. Much of it is structure made for every connection and never used, or used
only while the connection was opening. When the fast path recognises the protocol
(:func:`wsplugin.delivery.uvicorn_writer.uvicorn_writer`), :func:`slim` lets go of it:

- **The receive queue** (an ``asyncio.Queue``): four ``collections.deque`` of 760 bytes each
  (a deque allocates a 64-slot block when made). ``_putters`` (producers waiting for room:
  never, the queue is unbounded) and ``_finished`` (what ``join()`` waits for: uvicorn never
  joins) become objects shared by every connection, which refuse to be used; ``_getters``
  (the reader waiting) and ``_queue`` (messages) become :class:`SmallDeque`, a list with
  ``popleft`` (56 bytes empty); the queue becomes a :class:`SlimQueue`, which moves its
  messages to a deque while more than a few wait (a burst of frames from one client).
- **The ``writable`` event's** waiters: a :class:`SmallDeque` too.
- Not taken: **the protocol's ``__dict__``** (more than 30 attributes, so CPython keeps it
  as a combined dict grown to 128 slots, 1.6 KB; one rebuilt at its size has 64, 0.8 KB).
  Rebuilding it cost about 4 % of the server's CPU per connect and disconnect.
- **websockets-sansio:** the handshake request's headers (websockets' ``Headers``, ~1.5 KB
  with their strings), kept for the connection's lifetime by uvicorn and by websockets'
  parser but read by neither after the handshake (the ASGI scope has its own copy), and
  the extensions the server offered (uvicorn makes a permessage-deflate factory for every
  connection; websockets reads it only to negotiate, ~0.3 KB).
- **wsproto:** the handshake's h11 connection and request (~1.2 KB), never used once the
  websocket is open, and the two event deques of wsproto's connection objects.

Each step first checks the shape of what it changes (the exact types, that the queue is
unbounded, that nothing waits where a shared object goes) and otherwise leaves it alone:
an unexpected shape costs memory, never correctness. ``tests/test_uvicorn_idle.py``
fails if uvicorn starts using what is shared here, or if asyncio's queue and event stop
working with these parts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class SmallDeque(list[T]):
    """The part of ``collections.deque`` that asyncio's queues and events use, on a list:
    56 bytes when empty (a deque: 760), for the few items an idle connection's queue
    ever holds (``popleft`` is O(n), n being one or two here)."""

    __slots__ = ()

    def popleft(self) -> T:
        return self.pop(0)


SMALL = 16
"""Messages a slimmed receive queue keeps on its small list; from this many on, a deque."""


class SlimQueue(asyncio.Queue[Any]):
    """An unbounded ``asyncio.Queue`` whose messages live on a :class:`SmallDeque` while
    they are few, as they are on an idle or ordinary connection, and on a deque while
    they are many: a client that sends thousands of frames in one read costs O(1) per
    message, never a ``pop(0)`` over thousands (an ``asyncio.Queue`` made elsewhere is
    given this class by :func:`slim_queue`; nothing else changes)."""

    def _put(self, item: Any) -> None:
        parts: Any = self  # asyncio's private parts
        items = parts._queue
        if type(items) is SmallDeque and len(items) >= SMALL:
            parts._queue = items = deque(items)
        items.append(item)

    def _get(self) -> Any:
        parts: Any = self
        items = parts._queue
        item = items.popleft()
        if not items and type(items) is deque:  # the burst was read: small again
            parts._queue = SmallDeque()
        return item


class _NoPutters(deque[Any]):
    """The ``_putters`` of every unbounded queue slimmed here: always empty (a producer
    waits for room only in a bounded queue)."""

    def append(self, item: Any) -> NoReturn:
        raise RuntimeError("wsplugin shares this unbounded queue's putters: nothing may wait")

    appendleft = append


class _NeverJoined(asyncio.Event):
    """The ``_finished`` event of every queue slimmed here: ``put_nowait`` and
    ``task_done`` may clear and set it, nobody may wait for it (``Queue.join``)."""

    async def wait(self) -> NoReturn:
        raise RuntimeError("wsplugin shares this queue's join event: join() is not supported")


NO_PUTTERS = _NoPutters()
NEVER_JOINED = _NeverJoined()


def slim(protocol: Any) -> None:
    """Let go of what an open uvicorn websocket no longer needs (see the module)."""
    queue = getattr(protocol, "queue", None)
    if type(queue) is asyncio.Queue:
        slim_queue(queue)
    writable = getattr(protocol, "writable", None)
    if type(writable) is asyncio.Event:
        slim_event(writable)
    conn = getattr(protocol, "conn", None)
    _drop_request_headers(getattr(protocol, "request", None))
    _drop_extension_offers(conn)
    _slim_wsproto(conn)


def ended(protocol: Any) -> None:
    """The connection is over and its transport closing (no byte will be read again):
    websockets-sansio's ``ServerProtocol`` parses in a generator that refers back to it and
    never finishes, a cycle that keeps it (with its reader and the handshake request) until
    a garbage collection. Dropping the generator frees it at once."""
    conn: Any = getattr(protocol, "conn", None)
    if type(conn).__module__ == "websockets.server" and type(conn).__name__ == "ServerProtocol" \
            and hasattr(conn, "parser"):
        conn.parser = None


def slim_queue(queue: asyncio.Queue[Any]) -> None:
    """Share the unused parts of an unbounded ``asyncio.Queue``, shrink the others."""
    parts: Any = queue
    if getattr(parts, "_maxsize", None) != 0:
        return
    putters, finished = getattr(parts, "_putters", None), getattr(parts, "_finished", None)
    if type(putters) is deque and not putters:
        parts._putters = NO_PUTTERS
    if type(finished) is asyncio.Event and not getattr(finished, "_waiters", True):
        parts._finished = NEVER_JOINED
    _shrink(parts, "_getters")
    _shrink(parts, "_queue")
    if type(queue) is asyncio.Queue:
        parts.__class__ = SlimQueue  # the same object: the methods that place messages


def slim_event(event: asyncio.Event) -> None:
    """An ``asyncio.Event`` whose waiters are a :class:`SmallDeque`."""
    _shrink(event, "_waiters")


def _shrink(owner: Any, name: str) -> None:
    items = getattr(owner, name, None)
    if type(items) is deque:
        setattr(owner, name, SmallDeque(items))


def _drop_request_headers(request: Any) -> None:
    """websockets-sansio: empty the handshake request's ``Headers`` in place (uvicorn's
    ``request`` and websockets' parser hold the same object)."""
    headers: Any = getattr(request, "headers", None)
    if type(headers).__module__ == "websockets.datastructures" \
            and type(headers).__name__ == "Headers":
        headers.clear()


def _drop_extension_offers(conn: Any) -> None:
    """websockets-sansio: the extensions the server was ready to negotiate (``None``: none),
    once they are negotiated."""
    if type(conn).__module__ == "websockets.server" and type(conn).__name__ == "ServerProtocol" \
            and isinstance(getattr(conn, "available_extensions", None), list):
        conn.available_extensions = None


def _slim_wsproto(conn: Any) -> None:
    """wsproto: the open connection no longer uses its handshake's h11 state."""
    if type(conn).__module__ != "wsproto":
        return
    handshake: Any = getattr(conn, "handshake", None)
    connection: Any = getattr(conn, "connection", None)
    if type(handshake).__name__ != "H11Handshake" or type(connection).__name__ != "Connection":
        return
    if hasattr(handshake, "_h11_connection") and hasattr(handshake, "_initiating_request"):
        handshake._h11_connection = None
        handshake._initiating_request = None
    _shrink(handshake, "_events")
    _shrink(connection, "_events")
