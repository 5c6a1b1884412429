"""The managed room endpoint ``{prefix}/{room}``: handshake checks, then the read loop.

Every client frame is parsed, validated and turned into a call on the manager. Bad input
gets an ``error`` frame and the connection keeps working; abuse closes it with a code.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from wsplugin import protocol as p
from wsplugin._utils import maybe_await
from wsplugin.backends.history_store import PublishDone
from wsplugin.config import Settings
from wsplugin.counters import RefusalReason
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.uvicorn_writer import before_accept
from wsplugin.endpoint.origin import TrustedProxies, origin_allowed
from wsplugin.endpoint.positions import command_position, query_position
from wsplugin.endpoint.shutdown import abandon_later, going_away
from wsplugin.history import Position
from wsplugin.manager import WebSocketManager
from wsplugin.protocol import CloseCode, ProtocolError, check_room, error_frame, reply
from wsplugin.user_slots import Claim
from wsplugin.users import BadUser, user_of

logger = logging.getLogger("wsplugin")


class HookFailed(Exception):
    """A user hook raised something other than ``ValueError``."""


class ManagedEndpoint:
    """The ASGI app behind ``WebSocketRoute(prefix + "/{room}")``."""

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager
        self._may_publish = publish_policy(manager.settings)
        self._trusted_proxies = TrustedProxies(manager.settings.forwarded_allow_ips)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        room = str(scope.get("path_params", {}).get("room", ""))
        identity = await self._handshake(websocket, room)
        claim = None if identity is _REFUSED else await self.manager.claim_slot(identity)
        if claim is None:  # refused (counted by reason), or at max_connections_per_user
            await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
            return
        try:
            before_accept(scope, self.manager.settings.fast_path)
            await websocket.accept()
            try:
                await self.manager.start()
                await self._serve(websocket, send, receive, room, identity, claim)
            finally:  # a peer that stopped reading must not hold the server's shutdown open
                abandon_later(scope)
        finally:
            self.manager.release_slot(claim)  # a no-op once its connection opened

    async def _handshake(self, websocket: WebSocket, room: str) -> Any:
        """The identity, or ``_REFUSED`` (origin, room name, authenticate, authorize)."""
        settings = self.manager.settings
        if not origin_allowed(websocket.scope, settings.allowed_origins, self._trusted_proxies):
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
            user_of(identity, settings.max_user_info_bytes)
        except BadUser as exc:
            logger.warning("wsplugin: handshake refused: %s", exc)
            return self._refused("auth")
        except Exception as exc:
            logger.info("wsplugin: handshake refused by a hook: %r", exc)
            return self._refused("auth")
        return identity

    def _refused(self, reason: RefusalReason) -> Any:
        self.manager.tally.refuse(reason)  # metrics: refusals by reason
        return _REFUSED

    async def _serve(
        self, websocket: WebSocket, send: Send, receive: Receive, room: str, identity: Any,
        claim: Claim,
    ) -> None:
        coalesce = websocket.query_params.get("batch", "") in ("1", "true", "yes")
        conn = self.manager.open_connection(websocket, send, receive, identity=identity,
                                            coalesce=coalesce, claim=claim)
        try:
            welcome = {"type": "welcome", "connection_id": conn.id, "rooms": [room]}
            await self.manager.add_member(conn, room, reply=welcome, first=True,
                                          position=query_position(websocket.query_params))
            await self._read_loop(conn, room)
        except asyncio.CancelledError:  # the server stopped waiting for us (hypercorn)
            await going_away(conn, websocket.scope)
            raise
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
        elif kind in ("presence", "presence_stats"):
            await self._presence(conn, room, command)
        else:
            raise ProtocolError(p.UNKNOWN_TYPE, f"unknown command type {kind!r}; expected "
                                "publish, join, leave, ping, presence or presence_stats")

    async def _publish(self, conn: Connection, default_room: str, command: dict[str, Any]) -> None:
        room = check_room(command.get("room", default_room))
        if not self._may_publish(room):
            raise ProtocolError(p.FORBIDDEN, f"clients may not publish to {room!r}; "
                                f"{_ENABLE_PUBLISH}")
        if "data" not in command:
            raise ProtocolError(p.BAD_REQUEST, "publish needs 'data'")
        if room not in conn.rooms:
            raise ProtocolError(p.NOT_JOINED, f"join {room!r} before publishing to it")
        data = command["data"]
        hook = self.manager.settings.on_message
        if hook is not None:
            data = await self._run_hook(hook, conn, room, data)
        exclude = None if self.manager.settings.echo_to_sender else frozenset((conn.id,))
        command_id = command.get("id")
        try:
            await self.manager.publish(room, data, exclude=exclude, sender=conn.id,
                                       user=conn.user_id,
                                       wait=command_id is not None,
                                       on_done=_publish_reply(conn, room, command_id))
        except p.UnencodableData as exc:  # what the on_message hook returned
            logger.warning("wsplugin: on_message returned a value that cannot be sent: %s", exc)
            raise ProtocolError(p.BAD_REQUEST, str(exc)) from None

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
        head: dict[str, Any] = {"type": "joined", "room": room}
        if command.get("id") is not None:
            head["id"] = command["id"]
        await self.manager.add_member(conn, room, reply=head, position=command_position(command))

    async def _authorized(self, conn: Connection, room: str) -> bool:
        hook = self.manager.settings.authorize
        if hook is None:
            return True
        try:
            return bool(await maybe_await(hook(conn.identity, room)))
        except Exception as exc:
            logger.info("wsplugin: authorize hook refused %s: %r", room, exc)
            return False

    async def _presence(self, conn: Connection, default_room: str,
                        command: dict[str, Any]) -> None:
        """``presence`` (the snapshot) or ``presence_stats`` (counts), members only."""
        room = check_room(command.get("room", default_room))
        if room not in conn.rooms:
            raise ProtocolError(p.NOT_JOINED, f"join {room!r} to read its presence")
        tracker = self.manager.tracker
        spec = tracker.spec(room)
        if spec is None:
            raise ProtocolError(p.NO_PRESENCE, f"room {room!r} has no presence")
        command_id = command.get("id")
        if command["type"] == "presence":
            conn.deliver_text(await tracker.snapshot_frame(room, spec, command_id))
        else:
            conn.deliver_text(await tracker.stats_frame(room, command_id))

    async def _leave(self, conn: Connection, command: dict[str, Any]) -> None:
        room = check_room(_required(command, "room"))
        head: dict[str, Any] = {"type": "left", "room": room}
        if command.get("id") is not None:
            head["id"] = command["id"]
        if not await self.manager.remove_member(conn, room, reply=head):
            raise ProtocolError(p.NOT_JOINED, f"not a member of {room!r}")


_ENABLE_PUBLISH = ("the server enables client publishing with install_ws_manager("
                   "client_publish=True or a list of room patterns; env WSPLUGIN_CLIENT_PUBLISH) "
                   "or an on_message hook")


def publish_policy(settings: Settings) -> Callable[[str], bool]:
    """Whether a client may publish to a room, from ``client_publish`` and ``on_message``."""
    policy = settings.client_publish
    if policy is False:
        allowed = settings.on_message is not None  # the hook decides, message by message
        return lambda room: allowed
    if policy is True:
        return lambda room: True
    if not policy:
        return lambda room: False
    pattern = re.compile("|".join(fnmatch.translate(glob) for glob in policy))
    return lambda room: pattern.match(room) is not None


def _publish_reply(conn: Connection, room: str, command_id: Any) -> PublishDone:
    """How a client's publish ended: ``published`` (with an ``id``), or ``publish_failed``."""

    def done(position: Position | None, error: BaseException | None) -> None:
        if error is not None:
            conn.deliver_text(error_frame(p.PUBLISH_FAILED, f"not published: {error!r}",
                                          command_id))
        elif command_id is not None:
            offset = None if position is None else position.offset
            conn.deliver_text(reply("published", command_id, room=room, offset=offset))

    return done


def _required(command: dict[str, Any], name: str) -> Any:
    if name not in command:
        raise ProtocolError(p.BAD_REQUEST, f"{command['type']} needs {name!r}")
    return command[name]


_REFUSED: Any = object()
