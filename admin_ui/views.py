"""Read models shared by the JSON API and the stream: pages, searches, the snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from admin_ui.context import AdminContext
from admin_ui.manager import cluster_nodes
from wsplugin.info import ConnectionInfo

PAGE_SIZE = 50
MAX_PAGE = 500


def matches(info: ConnectionInfo, needle: str) -> bool:
    """Case-insensitive substring search on id, identity, user id and room names."""
    if needle in info.id.lower() or needle in (info.identity or "").lower():
        return True
    if needle in (info.user or "").lower():
        return True
    return any(needle in room.lower() for room in info.rooms)


def search_connections(
    items: Iterable[ConnectionInfo], query: str = ""
) -> list[ConnectionInfo]:
    """Filter by ``query``, then newest first (so a new connection shows on page one)."""
    needle = query.strip().lower()
    found = [info for info in items if not needle or matches(info, needle)]
    found.sort(key=lambda info: (-info.connected_at, info.id))
    return found


def page_of(items: Sequence[Any], offset: int, limit: int) -> tuple[int, list[Any]]:
    offset = max(0, offset)
    limit = max(1, min(limit, MAX_PAGE))
    return len(items), list(items[offset : offset + limit])


async def connections_page(
    ctx: AdminContext, *, query: str = "", room: str | None = None, user: str | None = None,
    offset: int = 0, limit: int = PAGE_SIZE,
) -> dict[str, Any]:
    """``user``: only that user's connections (an exact user id, cluster-wide)."""
    found = search_connections(await ctx.manager.connections(room, user=user), query)
    total, items = page_of(found, offset, limit)
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "items": [info.to_dict() for info in items],
    }


async def room_rows(ctx: AdminContext, query: str = "") -> list[dict[str, Any]]:
    """Every room (cluster-wide member counts) with local message counts and rates."""
    counts = await ctx.manager.rooms()
    local = ctx.manager.room_stats()
    needle = query.strip().lower()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "members": members,
            "messages": int(local.get(name, {}).get("messages", 0)),
            "dropped": int(local.get(name, {}).get("dropped", 0)),
            "rate": ctx.feed.room_rates.get(name, 0.0),
        }
        for name, members in counts.items()
        if not needle or needle in name.lower()
    ]
    rows.sort(key=lambda row: (-row["members"], row["name"]))
    return rows


async def rooms_page(
    ctx: AdminContext, *, query: str = "", offset: int = 0, limit: int = PAGE_SIZE
) -> dict[str, Any]:
    total, items = page_of(await room_rows(ctx, query), offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "items": items}


async def room_detail(
    ctx: AdminContext, room: str, *, offset: int = 0, limit: int = PAGE_SIZE
) -> dict[str, Any] | None:
    rows = [row for row in await room_rows(ctx) if row["name"] == room]
    if not rows:
        return None
    members = await connections_page(ctx, room=room, offset=offset, limit=limit)
    streams = getattr(ctx.manager, "streams", None)  # ManagerLike does not require history
    keeps_history = streams is not None and streams.spec(room) is not None
    tracker = getattr(ctx.manager, "tracker", None)  # nor presence
    tracks = tracker is not None and tracker.spec(room) is not None
    room_options = getattr(ctx.manager, "room_options", None)  # nor a room table
    options = None if room_options is None else room_options(room).describe()
    return {**rows[0], "connections": members, "history": keeps_history, "presence": tracks,
            "options": options}


async def room_presence(ctx: AdminContext, room: str, limit: int) -> dict[str, Any] | None:
    """Who is online in a presence room (users by id, at most ``limit``); None: no presence."""
    presence = getattr(ctx.manager, "presence", None)
    stats = getattr(ctx.manager, "presence_stats", None)
    if presence is None or stats is None:
        return None
    try:
        users = await presence(room)
        counts = await stats(room)
    except ValueError:  # no presence in this room
        return None
    listed = [{"id": user, "connections": entry.connections, "info": entry.info}
              for user, entry in sorted(users.items())[:limit]]
    return {"room": room, "users": listed,
            "count": {"users": counts.users, "connections": counts.connections}}


async def overview(ctx: AdminContext) -> dict[str, Any]:
    await ctx.feed.refresh()
    return {
        "node": ctx.manager.node_id,
        "totals": ctx.feed.totals,
        "rates": ctx.feed.rates,
        "health": dict(await ctx.manager.health()),
        "nodes": await cluster_nodes(ctx.manager),
        "dashboards": ctx.feed.subscribers,
    }


async def snapshot(ctx: AdminContext) -> dict[str, Any]:
    """Everything the page needs to draw itself; deltas follow."""
    seq = ctx.feed.seq
    audit = ctx.audit.newest(PAGE_SIZE)
    return {
        **await overview(ctx),
        "seq": seq,
        "connections": await connections_page(ctx),
        "rooms": await rooms_page(ctx),
        "events": ctx.feed.events_newest(PAGE_SIZE),
        "audit": [entry.to_dict() for entry in audit],
    }
