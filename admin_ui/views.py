"""Read models shared by the JSON API and the stream: pages, searches, the snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from admin_ui import listings
from admin_ui.context import AdminContext
from admin_ui.manager import cluster_nodes

PAGE_SIZE = 50
MAX_PAGE = 500


async def connections_page(
    ctx: AdminContext, *, query: str = "", room: str | None = None, user: str | None = None,
    offset: int = 0, limit: int = PAGE_SIZE,
) -> dict[str, Any]:
    """Connections newest first; ``user``: only that user's (an exact user id,
    cluster-wide). Only the page's records are built (:mod:`admin_ui.listings`)."""
    offset, limit = max(0, offset), max(1, min(limit, MAX_PAGE))
    total, items = await listings.connection_page(ctx.manager, query=query, room=room,
                                                  user=user, offset=offset, limit=limit)
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "items": [info.to_dict() for info in items],
    }


def room_row(ctx: AdminContext, name: str, members: int,
             local: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """A room's row: cluster-wide members, this node's message counts and rate."""
    counters = local.get(name, {})
    return {
        "name": name,
        "members": members,
        "messages": int(counters.get("messages", 0)),
        "dropped": int(counters.get("dropped", 0)),
        "rate": ctx.feed.room_rates.get(name, 0.0),
    }


async def rooms_page(
    ctx: AdminContext, *, query: str = "", offset: int = 0, limit: int = PAGE_SIZE
) -> dict[str, Any]:
    """Rooms by member count (cluster-wide), with this node's counters and rates; only the
    page's rows are built."""
    offset, limit = max(0, offset), max(1, min(limit, MAX_PAGE))
    total, page = await listings.room_page(ctx.manager, query=query, offset=offset,
                                           limit=limit)
    local = listings.room_counters(ctx.manager, [name for name, _ in page])
    items = [room_row(ctx, name, members, local) for name, members in page]
    return {"total": total, "offset": offset, "limit": limit, "items": items}


async def room_detail(
    ctx: AdminContext, room: str, *, offset: int = 0, limit: int = PAGE_SIZE
) -> dict[str, Any] | None:
    members = (await ctx.manager.rooms()).get(room)
    if members is None:
        return None
    row = room_row(ctx, room, members, listings.room_counters(ctx.manager, [room]))
    connections = await connections_page(ctx, room=room, offset=offset, limit=limit)
    streams = getattr(ctx.manager, "streams", None)  # ManagerLike does not require history
    keeps_history = streams is not None and streams.spec(room) is not None
    tracker = getattr(ctx.manager, "tracker", None)  # nor presence
    tracks = tracker is not None and tracker.spec(room) is not None
    room_options = getattr(ctx.manager, "room_options", None)  # nor a room table
    options = None if room_options is None else room_options(room).describe()
    return {**row, "connections": connections, "history": keeps_history, "presence": tracks,
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
