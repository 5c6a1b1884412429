"""Pages of connections and rooms that never build every record, and never block the loop.

With 20,000 connections, turning every connection into a :class:`ConnectionInfo` to show
50 of them costs ~130 ms of the event loop per request (and the garbage collector a
hundred thousand short-lived objects). Here a page is chosen from the manager's own
connection objects, newest first, and only its rows become records. A search walks the
connections in slices of :data:`SLICE` and yields to the event loop between slices, so
delivery goes on. Rooms are ranked with a bounded heap (the page's rows only), and their
counters are read for the page's rooms alone.

A manager without ``local_connection_list`` (another implementation of
:class:`~admin_ui.manager.ManagerLike`) gets the plain way: every record, then the page.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from admin_ui.manager import ManagerLike
from wsplugin.info import ConnectionInfo

SLICE = 2000
"""Connections searched between two yields to the event loop (~2-4 ms of work)."""


class Listed(Protocol):
    """A local connection as a listing needs it (``wsplugin``'s ``Connection``)."""

    @property
    def id(self) -> str: ...

    @property
    def connected_at(self) -> float: ...

    @property
    def identity_text(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def rooms(self) -> set[str]: ...

    def info(self) -> ConnectionInfo: ...


def info_matches(info: ConnectionInfo, needle: str) -> bool:
    """Case-insensitive substring search on id, identity, user id and room names."""
    if needle in info.id.lower() or needle in (info.identity or "").lower():
        return True
    if needle in (info.user or "").lower():
        return True
    return any(needle in room.lower() for room in info.rooms)


def listed_matches(conn: Listed, needle: str) -> bool:
    """:func:`info_matches` on a connection object, without building its record."""
    if needle in conn.id.lower() or needle in (conn.identity_text or "").lower():
        return True
    if needle in (conn.user_id or "").lower():
        return True
    return any(needle in room.lower() for room in conn.rooms)


def newest_first(info: ConnectionInfo) -> tuple[float, str]:
    return -info.connected_at, info.id


async def search(items: Sequence[Listed], needle: str) -> list[Listed]:
    """The connections that match ``needle``, in order, a slice at a time."""
    found: list[Listed] = []
    for start in range(0, len(items), SLICE):
        found.extend(c for c in items[start:start + SLICE] if listed_matches(c, needle))
        if start + SLICE < len(items):
            await asyncio.sleep(0)  # let deliveries in between
    return found


async def connection_page(
    manager: ManagerLike, *, query: str = "", room: str | None = None,
    user: str | None = None, offset: int = 0, limit: int = 50,
) -> tuple[int, list[ConnectionInfo]]:
    """How many connections match (cluster-wide), and the records of the page
    ``offset:offset + limit`` of them, newest first."""
    needle = query.strip().lower()
    local_list = getattr(manager, "local_connection_list", None)
    remote_list = getattr(manager, "remote_connections", None)
    if local_list is None or remote_list is None:
        everyone = await manager.connections(room, user=user)
        found = sorted((i for i in everyone if not needle or info_matches(i, needle)),
                       key=newest_first)
        return len(found), found[offset:offset + limit]
    remote: list[ConnectionInfo] = await remote_list(room, user=user)
    local: Sequence[Listed] = local_list(room, user=user)  # read after the last await
    if needle:
        local = await search(list(local), needle)  # a snapshot: the slices yield
        remote = [info for info in remote if info_matches(info, needle)]
    total = len(local) + len(remote)
    if not remote:
        return total, [conn.info() for conn in local[offset:offset + limit]]
    remote.sort(key=newest_first)
    merged: Iterable[Listed | ConnectionInfo] = heapq.merge(
        local, remote, key=lambda item: -item.connected_at)
    page = itertools.islice(merged, offset, offset + limit)
    return total, [item if isinstance(item, ConnectionInfo) else item.info() for item in page]


async def room_page(
    manager: ManagerLike, *, query: str = "", offset: int = 0, limit: int = 50,
) -> tuple[int, list[tuple[str, int]]]:
    """How many rooms match, and the page of them by member count (most first, then by
    name): ``(name, members)`` pairs. Only the page's rows are ranked in full (a heap)."""
    counts = await manager.rooms()
    needle = query.strip().lower()
    rows: Iterable[tuple[str, int]] = counts.items()
    if needle:
        rows = [(name, members) for name, members in rows if needle in name.lower()]
    else:
        rows = list(rows)
    total = len(rows)
    top = heapq.nsmallest(offset + limit, rows, key=lambda row: (-row[1], row[0]))
    return total, top[offset:offset + limit]


def room_counters(manager: ManagerLike, names: Sequence[str]) -> dict[str, Any]:
    """This node's counters of the rooms ``names``."""
    return dict(manager.room_stats(names))
