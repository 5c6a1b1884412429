"""The JSON API under ``{admin_path}/api``: the same reads and actions as the page."""

import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from admin_ui import views
from admin_ui.audit import AuditEntry, shorten
from admin_ui.auth import Principal
from admin_ui.context import AdminContext
from admin_ui.dependencies import PrincipalDependency
from admin_ui.schemas import (
    ACTION_ERRORS,
    NOT_FOUND,
    READ_ERRORS,
    ROOM_NAME,
    ActionResult,
    BroadcastRequest,
    ConnectionPage,
    EventItem,
    KickRequest,
    KickUserRequest,
    KickUserResult,
    Me,
    Overview,
    RoomDetail,
    RoomHistory,
    RoomPage,
    RoomPresence,
    SendRequest,
)
from admin_ui.security import SecureRoute
from wsplugin.events import EventKind
from wsplugin.history import MAX_OFFSET, NoHistory
from wsplugin.users import MAX_USER_ID_LENGTH

T = TypeVar("T")
TAGS: list[str | Any] = ["wsplugin admin"]
Offset = Query(0, ge=0)
Limit = Query(views.PAGE_SIZE, ge=1, le=views.MAX_PAGE)
Search = Query("", max_length=200, description="Substring of the id, identity or a room")
RoomFilter = Query(None, pattern=ROOM_NAME, description="Only the members of this room")
UserFilter = Query(None, min_length=1, max_length=MAX_USER_ID_LENGTH,
                   description="Only the connections of this user (exact user id)")
RoomName = Path(pattern=ROOM_NAME)


def preview(data: Any) -> str:
    return shorten(json.dumps(data, default=str))


def api_router(
    ctx: AdminContext, viewer: PrincipalDependency, operator: PrincipalDependency
) -> APIRouter:
    router = APIRouter(prefix="/api", tags=TAGS, route_class=SecureRoute)
    _reads(router, ctx, viewer)
    _actions(router, ctx, operator)
    return router


def read_route(path: str, model: Any, **options: Any) -> dict[str, Any]:
    """``@router.get`` options of a read: its model and the errors every read can answer."""
    responses = {**READ_ERRORS, **options.pop("responses", {})}
    return {"path": path, "response_model": model, "responses": responses, **options}


def _reads(router: APIRouter, ctx: AdminContext, viewer: PrincipalDependency) -> None:
    seen = [Depends(viewer)]

    @router.get(**read_route("/me", Me))
    async def me(who: Annotated[Principal, Depends(viewer)]) -> dict[str, Any]:
        """Who is logged in, and the CSRF token their POSTs must carry (X-CSRF-Token)."""
        return {"name": who.name, "role": who.role, "csrf_token": ctx.sessions.csrf_token(who)}

    @router.get(**read_route("/overview", Overview, dependencies=seen))
    async def overview() -> dict[str, Any]:
        """Totals, per-second rates, health and the cluster's nodes."""
        return await views.overview(ctx)

    @router.get(**read_route("/connections", ConnectionPage, dependencies=seen))
    async def connections(
        q: str = Search, room: str | None = RoomFilter, user: str | None = UserFilter,
        offset: int = Offset, limit: int = Limit,
    ) -> dict[str, Any]:
        """Connections (cluster-wide), newest first, paged, optionally searched or filtered
        by room or user."""
        page = views.connections_page(ctx, query=q, room=room, user=user, offset=offset,
                                      limit=limit)
        return await _checked(page)

    @router.get(**read_route("/rooms", RoomPage, dependencies=seen))
    async def rooms(q: str = Search, offset: int = Offset, limit: int = Limit) -> dict[str, Any]:
        """Rooms by member count, with message rates."""
        return await views.rooms_page(ctx, query=q, offset=offset, limit=limit)

    @router.get(**read_route("/rooms/{room}", RoomDetail, dependencies=seen, responses=NOT_FOUND))
    async def room(
        room: Annotated[str, RoomName], offset: int = Offset, limit: int = Limit
    ) -> dict[str, Any]:
        """One room and a page of its members."""
        detail = await _checked(views.room_detail(ctx, room, offset=offset, limit=limit))
        if detail is None:
            raise HTTPException(404, "no such room")
        return detail

    @router.get(**read_route("/rooms/{room}/history", RoomHistory, dependencies=seen,
                            responses=NOT_FOUND))
    async def room_history(
        room: Annotated[str, RoomName],
        since: int | None = Query(None, ge=0, le=MAX_OFFSET),
        limit: int = Query(50, ge=0, le=1000),
    ) -> dict[str, Any]:
        """A history room's stored messages (after ``since``, or the newest ``limit``) and
        its position; 404 for a room without history."""
        history = getattr(ctx.manager, "history", None)  # ManagerLike does not require it
        if history is None:
            raise HTTPException(404, "this manager keeps no history")
        try:
            page = await history(room, since=since, limit=limit)
        except NoHistory as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:  # a bad room name or offset
            raise HTTPException(422, str(exc)) from None
        result: dict[str, Any] = page.to_dict()
        return result

    @router.get(**read_route("/rooms/{room}/presence", RoomPresence, dependencies=seen,
                            responses=NOT_FOUND))
    async def room_presence(room: Annotated[str, RoomName], limit: int = Limit
                            ) -> dict[str, Any]:
        """Who is online in a presence room, cluster-wide; 404 for a room without presence."""
        found = await _checked(views.room_presence(ctx, room, limit))
        if found is None:
            raise HTTPException(404, "this room has no presence")
        return found

    @router.get(**read_route("/events", list[EventItem], dependencies=seen))
    async def events(
        limit: int = Limit,
        kind: Annotated[list[EventKind] | None, Query(
            description="Only events of these kinds (repeat the parameter for several)")
        ] = None,
    ) -> list[dict[str, Any]]:
        """The event log, newest first: the newest 500 of each kind are kept, so a flood of
        one kind (broadcasts) never evicts the rare ones."""
        return ctx.feed.events_newest(limit, kinds=None if not kind else set(kind))

    @router.get(**read_route("/audit", list[AuditEntry], dependencies=seen))
    async def audit(limit: int = Limit) -> list[AuditEntry]:
        """The audit log of operator actions, newest first (bounded)."""
        return ctx.audit.newest(limit)


def _actions(router: APIRouter, ctx: AdminContext, operator: PrincipalDependency) -> None:
    @router.post("/broadcast", response_model=ActionResult, responses=ACTION_ERRORS)
    async def broadcast(
        body: BroadcastRequest, who: Annotated[Principal, Depends(operator)]
    ) -> Any:
        """Send ``data`` to a room, or to everyone when ``room`` is null (operators only)."""
        if body.room is None:
            delivered = await ctx.manager.broadcast_all(body.data)
        else:
            delivered = await _checked(ctx.manager.broadcast(body.room, body.data))
        action = "broadcast_all" if body.room is None else "broadcast"
        result = f"delivered {delivered}"
        ctx.audit.record(who, action, body.room or "*", preview(body.data), result)
        return ActionResult(ok=True, delivered=delivered)

    @router.post("/send", response_model=ActionResult, responses=ACTION_ERRORS)
    async def send(body: SendRequest, who: Annotated[Principal, Depends(operator)]) -> Any:
        """Send ``data`` to one connection, wherever it is (operators only)."""
        ok = await ctx.manager.send(body.connection_id, body.data)
        ctx.audit.record(who, "send", body.connection_id, preview(body.data), _result(ok))
        return ActionResult(ok=ok)

    @router.post("/kick", response_model=ActionResult, responses=ACTION_ERRORS)
    async def kick(body: KickRequest, who: Annotated[Principal, Depends(operator)]) -> Any:
        """Close a connection with code 4000 and ``reason`` (operators only)."""
        ok = await ctx.manager.kick(body.connection_id, reason=body.reason)
        ctx.audit.record(who, "kick", body.connection_id, body.reason, _result(ok))
        return ActionResult(ok=ok)

    @router.post("/kick-user", response_model=KickUserResult, responses=ACTION_ERRORS)
    async def kick_user(
        body: KickUserRequest, who: Annotated[Principal, Depends(operator)]
    ) -> Any:
        """Close every connection of a user, on every node, with code 4000 and ``reason``
        (operators only)."""
        kicked = await ctx.manager.kick_user(body.user_id, reason=body.reason)
        ctx.audit.record(who, "kick_user", body.user_id, body.reason, f"kicked {kicked}")
        return KickUserResult(ok=kicked > 0, kicked=kicked)


async def _checked(call: Awaitable[T]) -> T:
    """A bad room name (the core validates them) is the caller's mistake: 422, not 500."""
    try:
        return await call
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _result(ok: bool) -> str:
    return "ok" if ok else "not found"
