"""The managed room endpoint ``{prefix}/{room}``: handshake checks, then the read loop.

Every client frame is parsed, validated and turned into a call on the manager. Bad input
gets an ``error`` frame and the connection keeps working; abuse closes it with a code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from wsplugin import protocol as p
from wsplugin._fastpath import FastWriter
from wsplugin._utils import maybe_await
from wsplugin.connection import Connection
from wsplugin.manager import WebSocketManager
from wsplugin.origin import origin_allowed
from wsplugin.protocol import CloseCode, ProtocolError, check_room, error_frame, reply
from wsplugin.tally import RefusalReason
from wsplugin.user_route import describe_client

logger = logging.getLogger("wsplugin")


class HookFailed(Exception):
    """A user hook raised something other than ``ValueError``."""


class ManagedEndpoint:
    """The ASGI app behind ``WebSocketRoute(prefix + "/{room}")``."""

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        room = str(scope.get("path_params", {}).get("room", ""))
        identity = await self._handshake(websocket, room)
        if identity is _REFUSED:
            await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
            return
        await websocket.accept()
        await self.manager.start()
        await self._serve(websocket, send, receive, room, identity)

    async def _handshake(self, websocket: WebSocket, room: str) -> Any:
        """The identity, or ``_REFUSED`` (origin, room name, authenticate, authorize)."""
        settings = self.manager.settings
        if not origin_allowed(websocket.scope, settings.allowed_origins):
            logger.info("wsplugin: refused handshake from origin %r",
                        websocket.headers.get("origin"))
            return self._refused("origin")
        if not p.is_valid_room(room):
            return self._refused("bad_room")
        identity: Any = None
        try:
            if settings.authenticate is not None:
                identity = await maybe_await(settings.authenticate(websocket))
                if identity is None:
                    return self._refused("auth")
            if settings.authorize is not None and not await maybe_await(
                settings.authorize(identity, room)
            ):
                return self._refused("auth")
        except Exception as exc:
            logger.info("wsplugin: handshake refused by a hook: %r", exc)
            return self._refused("auth")
        return identity

    def _refused(self, reason: RefusalReason) -> Any:
        self.manager.tally.refuse(reason)  # metrics: refusals by reason
        return _REFUSED

    async def _serve(
        self, websocket: WebSocket, send: Send, receive: Receive, room: str, identity: Any
    ) -> None:
        remote, user_agent = describe_client(websocket)
        coalesce = websocket.query_params.get("batch", "") in ("1", "true", "yes")
        conn = self.manager.open_connection(
            send, receive, identity=identity, remote=remote, user_agent=user_agent,
            coalesce=coalesce, websocket=websocket,
        )
        conn.bind_reader(asyncio.current_task())
        conn.fast = FastWriter.attach(websocket.scope)
        conn.deliver_text(reply("welcome", connection_id=conn.id, rooms=[room]))
        try:
            await self.manager.join_local(conn, room)
            await self._read_loop(conn, room)
        except HookFailed as exc:
            logger.error("wsplugin: on_message hook failed for %s: %r", conn.id, exc.__cause__)
            await conn.aclose(CloseCode.INTERNAL, "internal error")
        except Exception:
            logger.exception("wsplugin: error while serving %s", conn.id)
            await conn.aclose(CloseCode.INTERNAL, "internal error")
        finally:
            if not conn.closed:  # cancelled (server shutdown): clean up all the same
                conn.disconnected(1006)

    async def _read_loop(self, conn: Connection, room: str) -> None:
        while True:
            frame = await conn.receive()
            if frame is None:
                return
            command_id = None
            try:
                if isinstance(frame, bytes):
                    raise ProtocolError(p.BAD_REQUEST, "binary frames are not commands; "
                                        "send JSON text frames")
                command = p.parse_command(frame)
                command_id = command.get("id")
                await self._dispatch(conn, room, command)
            except ProtocolError as exc:
                command_id = command_id if command_id is not None else exc.command_id
                conn.deliver_text(error_frame(exc.code, exc.detail, command_id))

    async def _dispatch(self, conn: Connection, room: str, command: dict[str, Any]) -> None:
        kind = command["type"]
        if kind == "publish":
            await self._publish(conn, room, command)
        elif kind == "join":
            await self._join(conn, command)
        elif kind == "leave":
            await self._leave(conn, command)
        elif kind == "ping":
            conn.deliver_text(reply("pong", command.get("id")))
        else:
            raise ProtocolError(p.UNKNOWN_TYPE, f"unknown command type {kind!r}; "
                                "expected publish, join, leave or ping")

    async def _publish(self, conn: Connection, default_room: str, command: dict[str, Any]) -> None:
        room = check_room(command.get("room", default_room))
        if "data" not in command:
            raise ProtocolError(p.BAD_REQUEST, "publish needs 'data'")
        if room not in conn.rooms:
            raise ProtocolError(p.NOT_JOINED, f"join {room!r} before publishing to it")
        data = command["data"]
        hook = self.manager.settings.on_message
        if hook is not None:
            data = await self._run_hook(hook, conn, room, data)
        exclude = None if self.manager.settings.echo_to_sender else frozenset((conn.id,))
        await self.manager.publish(room, data, exclude=exclude, sender=conn.id, wait=False)

    async def _run_hook(self, hook: Any, conn: Connection, room: str, data: Any) -> Any:
        try:
            return await maybe_await(hook(conn, room, data))
        except ValueError as exc:
            raise ProtocolError(p.REJECTED, str(exc) or "message rejected") from None
        except Exception as exc:
            raise HookFailed() from exc

    async def _join(self, conn: Connection, command: dict[str, Any]) -> None:
        room = check_room(_required(command, "room"))
        settings = self.manager.settings
        if room not in conn.rooms:
            if len(conn.rooms) >= settings.max_rooms_per_connection:
                raise ProtocolError(p.TOO_MANY_ROOMS, f"at most "
                                    f"{settings.max_rooms_per_connection} rooms per connection")
            if not await self._authorized(conn, room):
                raise ProtocolError(p.FORBIDDEN, f"not allowed to join {room!r}")
            await self.manager.join_local(conn, room)
        conn.deliver_text(reply("joined", command.get("id"), room=room))

    async def _authorized(self, conn: Connection, room: str) -> bool:
        hook = self.manager.settings.authorize
        if hook is None:
            return True
        try:
            return bool(await maybe_await(hook(conn.identity, room)))
        except Exception as exc:
            logger.info("wsplugin: authorize hook refused %s: %r", room, exc)
            return False

    async def _leave(self, conn: Connection, command: dict[str, Any]) -> None:
        room = check_room(_required(command, "room"))
        if not await self.manager.leave_local(conn, room):
            raise ProtocolError(p.NOT_JOINED, f"not a member of {room!r}")
        conn.deliver_text(reply("left", command.get("id"), room=room))


def _required(command: dict[str, Any], name: str) -> Any:
    if name not in command:
        raise ProtocolError(p.BAD_REQUEST, f"{command['type']} needs {name!r}")
    return command[name]


_REFUSED: Any = object()
