"""``manager.connect(websocket)``: a user-owned websocket route handed to the manager."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from wsplugin.delivery.uvicorn_writer import before_accept
from wsplugin.endpoint.shutdown import abandon_later, going_away
from wsplugin.protocol import CloseCode
from wsplugin.types import ASGIReceive, ASGISend, Data, Identity
from wsplugin.user_slots import Claim
from wsplugin.users import UserLimitReached, user_of

if TYPE_CHECKING:
    from wsplugin.config import Settings
    from wsplugin.delivery.connection import Connection

USER_LIMIT_REASON = "too many connections for this user"


class RouteManager(Protocol):
    """What a user-owned route uses of the manager (:class:`~wsplugin.WebSocketManager`)."""

    @property
    def settings(self) -> Settings: ...

    async def start(self) -> None: ...

    async def claim_slot(self, identity: Identity) -> Claim | None: ...

    def release_slot(self, claim: Claim) -> None: ...

    def open_connection(self, websocket: WebSocket, send: ASGISend, receive: ASGIReceive, *,
                        identity: Identity = None, coalesce: bool = False,
                        claim: Claim | None = None) -> Connection: ...

    async def add_member(self, conn: Connection, room: str) -> bool: ...

    async def send(self, connection_id: str, data: Data) -> bool: ...

    async def join(self, connection_id: str, room: str) -> bool: ...

    async def leave(self, connection_id: str, room: str) -> bool: ...


class UserConnection:
    """The connection object of a user-owned route.

    ``async with manager.connect(websocket, rooms=["lobby"]) as conn:`` accepts the socket
    if needed, joins the rooms and registers it; ``conn.id``, ``await conn.send(data)`` and
    ``async for frame in conn`` (text frames as ``str``, binary as ``bytes``) work inside.
    Leaving the block closes the socket (1000, or 1011 after an exception) and cleans up
    exactly once; an ordinary client disconnect (``WebSocketDisconnect``) is swallowed.
    A user (``identity``: a :class:`~wsplugin.User` or a ``str``) already at
    ``max_connections_per_user`` is refused: HTTP 403 (or close 1008 if the route accepted
    already), then :class:`~wsplugin.UserLimitReached` is raised from ``async with``.
    """

    def __init__(
        self,
        manager: RouteManager,
        websocket: WebSocket,
        rooms: list[str],
        identity: Identity,
        coalesce: bool,
    ) -> None:
        self.manager = manager
        self.websocket = websocket
        self._rooms = rooms
        self._identity = identity
        self._coalesce = coalesce
        self._conn: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("use the connection inside 'async with manager.connect(...)'")
        return self._conn

    @property
    def id(self) -> str:
        return self.connection.id

    @property
    def rooms(self) -> frozenset[str]:
        return frozenset(self.connection.rooms)

    @property
    def closed(self) -> bool:
        return self.connection.closed

    async def __aenter__(self) -> UserConnection:
        websocket = self.websocket
        claim = await self.manager.claim_slot(self._identity)
        if claim is None:
            await self._refuse()
        try:
            if websocket.client_state == WebSocketState.CONNECTING:
                before_accept(websocket.scope, self.manager.settings.fast_path)
                await websocket.accept()
            await self.manager.start()
            conn = self.manager.open_connection(websocket, websocket.send, websocket.receive,
                                                identity=self._identity,
                                                coalesce=self._coalesce, claim=claim)
        finally:
            self.manager.release_slot(claim)  # a no-op once its connection opened
        self._conn = conn
        for room in self._rooms:
            await self.manager.add_member(conn, room)
        return self

    async def _refuse(self) -> NoReturn:
        """The user is at ``max_connections_per_user``: refuse the websocket (HTTP 403 before
        accept, else close 1008) and raise :class:`UserLimitReached`."""
        settings = self.manager.settings
        user = user_of(self._identity, settings.max_user_info_bytes)
        assert user is not None and settings.max_connections_per_user is not None
        if self.websocket.client_state == WebSocketState.CONNECTING:
            await self.websocket.close(CloseCode.POLICY)
        elif self.websocket.client_state == WebSocketState.CONNECTED:
            await self.websocket.close(CloseCode.POLICY, USER_LIMIT_REASON)
        raise UserLimitReached(user.id, settings.max_connections_per_user)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        conn = self.connection
        abandon_later(self.websocket.scope)
        try:
            if isinstance(exc, WebSocketDisconnect):
                conn.disconnected(exc.code)
                return True
            if isinstance(exc, asyncio.CancelledError):  # server shutdown: tell the client
                await going_away(conn, self.websocket.scope)
                return False
            if exc is not None and not isinstance(exc, Exception):
                conn.disconnected(1006)
                return False
            await conn.aclose(CloseCode.NORMAL if exc is None else CloseCode.INTERNAL,
                              "" if exc is None else "internal error")
            return False
        finally:
            if not conn.closed:  # cancelled while closing: clean up all the same
                conn.disconnected(1006)
            conn.release()  # freed by reference counting, not left to the collector

    async def send(self, data: Data) -> bool:
        """Send a JSON value (in a ``message`` envelope) or bytes to this connection."""
        return await self.manager.send(self.id, data)

    async def join(self, room: str) -> bool:
        return await self.manager.join(self.id, room)

    async def leave(self, room: str) -> bool:
        return await self.manager.leave(self.id, room)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        await self.connection.aclose(code, reason)

    def __aiter__(self) -> UserConnection:
        return self

    async def __anext__(self) -> Any:
        data = await self.connection.receive()
        if data is None:
            raise StopAsyncIteration
        return data
