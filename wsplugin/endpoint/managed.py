"""The managed room endpoint ``{prefix}/{room}``: handshake checks, then the read loop.

Every client frame is parsed, validated and turned into a call on the manager. Bad input
gets an ``error`` frame and the connection keeps working; abuse closes it with a code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from wsplugin import protocol as p
from wsplugin._utils import maybe_await
from wsplugin.auth.tokens import Grant, TokenAuth, TokenError
from wsplugin.backends.history_store import PublishDone
from wsplugin.counters import RefusalReason
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.uvicorn_writer import before_accept, forget_send
from wsplugin.endpoint.authenticate import Authenticator, Refused
from wsplugin.endpoint.origin import TrustedProxies, origin_allowed
from wsplugin.endpoint.positions import command_position, query_position
from wsplugin.endpoint.shutdown import abandon_later, going_away
from wsplugin.endpoint.tokens import (
    TOKEN_QUERY,
    ClientGone,
    TokenSession,
    bearer_token,
    expiry_fields,
    receive_connect,
    verify,
)
from wsplugin.endpoint.user_route import USER_LIMIT_REASON
from wsplugin.history import Position
from wsplugin.manager import WebSocketManager
from wsplugin.protocol import (
    CloseCode,
    ProtocolError,
    check_room,
    error_frame,
    json_size,
    reply,
)
from wsplugin.rooms import RoomOptions
from wsplugin.rooms.typed import error_detail, invalid_frame, validate
from wsplugin.user_slots import Claim
from wsplugin.users import BadUser, user_of

logger = logging.getLogger("wsplugin")


Admission = tuple[Any, Claim, "Grant | None"]
"""Who is served: the identity, its user's slot, its token's grant (with token auth)."""


class HookFailed(Exception):
    """A user hook raised something other than ``ValueError``."""


class ManagedEndpoint:
    """The ASGI app behind ``WebSocketRoute(prefix + "/{room}")``.

    ``app``: where ``dependency_overrides`` are looked up (a FastAPI app), if anywhere.
    """

    def __init__(self, manager: WebSocketManager, app: Any = None) -> None:
        self.manager = manager
        settings = manager.settings
        self._trusted_proxies = TrustedProxies(settings.forwarded_allow_ips)
        hook = settings.authenticate
        self._tokens = hook if isinstance(hook, TokenAuth) else None
        self._authenticator = Authenticator(
            None if isinstance(hook, TokenAuth) else hook, settings.dependencies,
            f"{settings.prefix}/{{room}}",
            app if hasattr(app, "dependency_overrides") else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admission (every refusal is answered there), then the accept and the
        connection's life in this same coroutine: an idle connection keeps every frame of
        its task suspended, two of them here (this one and :meth:`_serve`)."""
        websocket = WebSocket(scope, receive, send)
        room = str(scope.get("path_params", {}).get("room", ""))
        try:
            admitted = await self._admission(websocket, receive, room)
            if admitted is None:  # refused, and told so
                return
            identity, claim, grant = admitted
            del admitted  # the frame outlives the handshake: no tuple kept for it
            try:
                if websocket.application_state is WebSocketState.CONNECTING:  # not in band
                    before_accept(scope, self.manager.settings.fast_path)
                    await websocket.accept()
                try:
                    await self.manager.start()
                    await self._serve(websocket, send, receive, room, identity, claim, grant)
                finally:  # a peer that stopped reading must not hold the shutdown open
                    abandon_later(scope)
            finally:
                self.manager.release_slot(claim)  # a no-op once its connection opened
        finally:
            forget_send(scope)  # no cycle left for the collector (the shortcut's way in)

    async def _admission(self, websocket: WebSocket, receive: Receive,
                         room: str) -> Admission | None:
        """Who is served, with a slot of their user; ``None``: refused (and answered)."""
        identity = await self._handshake(websocket, room)
        if isinstance(identity, Refused):
            await websocket.close(identity.code, identity.reason)  # before accept: HTTP 403
            return None
        if self._tokens is not None:
            return await self._token_admission(websocket, receive, room, self._tokens)
        claim = await self.manager.claim_slot(identity)
        if claim is None:  # at max_connections_per_user (counted)
            await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
            return None
        return identity, claim, None

    async def _handshake(self, websocket: WebSocket, room: str) -> Any:
        """The identity, or :class:`Refused` (origin, room name, a token in the URL, the
        dependencies, authenticate, authorize), counted by reason."""
        settings = self.manager.settings
        if not origin_allowed(websocket.scope, settings.allowed_origins, self._trusted_proxies):
            logger.info("wsplugin: refused handshake from origin %r",
                        websocket.headers.get("origin"))
            return self._refused("origin")
        if not p.is_valid_room(room):
            return self._refused("bad_room")
        if self._tokens is not None and TOKEN_QUERY in (query_of(websocket) or ()):
            logger.info("wsplugin: refused a handshake with a token in its URL: tokens go in "
                        "the connect frame or an Authorization header, never in URLs")
            return self._refused("auth")
        try:
            identity = await self._authenticator.identity(websocket)
            if self._tokens is not None:
                return None  # the token says who it is, after this
            if settings.authenticate is not None and identity is None:
                return self._refused("auth")
            if not await self._authorized(identity, room):
                return self._refused("auth")
            user_of(identity, settings.max_user_info_bytes)
        except Refused as exc:
            logger.info("wsplugin: handshake refused: %s", exc)
            self.manager.tally.refuse("auth")
            return exc
        except BadUser as exc:
            logger.warning("wsplugin: handshake refused: %s", exc)
            return self._refused("auth")
        except Exception as exc:
            logger.info("wsplugin: handshake refused by a hook: %r", exc)
            return self._refused("auth")
        return identity

    def _refused(self, reason: RefusalReason) -> Refused:
        self.manager.tally.refuse(reason)  # metrics: refusals by reason
        return Refused(reason)

    # ------------------------------------------------------------------ tokens
    async def _token_admission(
        self, websocket: WebSocket, receive: Receive, room: str, auth: TokenAuth,
    ) -> Admission | None:
        """A token in an ``Authorization`` header is checked before the accept (a bad one
        is accepted, then closed 4001: only a close frame carries a reason); otherwise the
        socket is accepted and the ``connect`` frame awaited."""
        token = bearer_token(websocket.headers)
        if token is None:
            return await self._in_band(websocket, receive, room, auth)
        try:
            grant = await self._verify(auth, token)
        except TokenError as exc:
            await websocket.accept()
            try:
                await self._close_refused(websocket, CloseCode.UNAUTHORIZED, exc.reason)
            finally:
                abandon_later(websocket.scope)
            return None
        claim = await self._admit(grant, room)
        if isinstance(claim, str):
            await websocket.close(CloseCode.POLICY)  # before accept: HTTP 403
            return None
        return grant.user, claim, grant

    async def _in_band(
        self, websocket: WebSocket, receive: Receive, room: str, auth: TokenAuth,
    ) -> Admission | None:
        """Accept, then nothing but ``{"type":"connect","token":...}`` within
        ``auth_timeout``; a refusal that needs the token's user closes 4003. The admission
        of the accepted socket, or ``None`` (closed)."""
        settings = self.manager.settings
        before_accept(websocket.scope, settings.fast_path)
        await websocket.accept()
        admitted: Admission | None = None
        try:
            try:
                token = await receive_connect(receive, settings.auth_timeout,
                                              settings.max_message_bytes)
                grant = await self._verify(auth, token)
            except ClientGone:
                return None
            except TokenError as exc:
                await self._close_refused(websocket, CloseCode.UNAUTHORIZED, exc.reason)
                return None
            claim = await self._admit(grant, room)
            if isinstance(claim, str):  # the refusal's reason
                await self._close_refused(websocket, CloseCode.FORBIDDEN, claim, counted=True)
                return None
            admitted = grant.user, claim, grant
            return admitted
        finally:  # refused after the accept: a peer that stopped reading must not hold the
            if admitted is None:  # server's shutdown open (once admitted, __call__ sees to it)
                abandon_later(websocket.scope)

    async def _verify(self, auth: TokenAuth, token: str) -> Grant:
        try:
            return await verify(auth, token, self.manager.settings.max_user_info_bytes)
        except TokenError as exc:
            logger.info("wsplugin: token refused: %s", exc.reason)
            raise

    async def _admit(self, grant: Grant, room: str) -> Claim | str:
        """The token's user may be in ``room`` (its ``rooms`` and ``authorize``) and has a
        free slot (``max_connections_per_user``): the claim, else why not (counted)."""
        if not grant.allows(room) or not await self._authorized(grant.user, room):
            self.manager.tally.refuse("auth")
            return ROOM_REFUSED
        claim = await self.manager.claim_slot(grant.user)  # a refusal is counted there
        return USER_LIMIT_REASON if claim is None else claim

    async def _close_refused(self, websocket: WebSocket, code: int, reason: str, *,
                             counted: bool = False) -> None:
        """Close an accepted socket whose handshake failed (counted as ``auth`` unless
        already counted); a client already gone is not an error."""
        if not counted:
            self.manager.tally.refuse("auth")
        try:
            await websocket.close(code, reason)
        except Exception as exc:  # the client went away meanwhile
            logger.debug("wsplugin: close %d not sent: %r", code, exc)

    # ------------------------------------------------------------------ serving
    async def _serve(
        self, websocket: WebSocket, send: Send, receive: Receive, room: str, identity: Any,
        claim: Claim, grant: Grant | None,
    ) -> None:
        """Open the connection, join its room, then read its frames until it ends (the
        read loop is here rather than in a coroutine of its own: see :meth:`__call__`)."""
        coalesce, position = _asked_for(websocket)
        conn = self.manager.open_connection(
            websocket, send, receive, identity=identity, coalesce=coalesce,
            claim=claim, expires_at=None if grant is None else grant.expires_at)
        session = None if grant is None else TokenSession(
            conn, grant, self.manager.settings.refresh_grace)
        try:
            await self.manager.add_member(
                conn, room, reply=_welcome(conn, room, grant), first=True,
                position=position)
            while (frame := await conn.receive()) is not None:
                await self._command(conn, room, frame, session)
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
            if session is not None:
                session.cancel()
            if not conn.closed:  # cancelled (server shutdown): clean up all the same
                conn.disconnected(1006)
            conn.release()  # freed by reference counting, not left to the collector

    async def _command(self, conn: Connection, room: str, frame: str | bytes,
                       session: TokenSession | None) -> None:
        """One frame from the client: a command, or an ``error`` frame back."""
        command_id = None
        try:
            if isinstance(frame, bytes):
                raise ProtocolError(p.BAD_REQUEST, "binary frames are not commands; "
                                    "send JSON text frames")
            command = p.parse_command(frame)
            command_id = command.get("id")
            await self._dispatch(conn, room, command, session)
        except ProtocolError as exc:
            command_id = command_id if command_id is not None else exc.command_id
            conn.deliver_text(error_frame(exc.code, exc.detail, command_id))

    async def _dispatch(self, conn: Connection, room: str, command: dict[str, Any],
                        session: TokenSession | None) -> None:
        kind = command["type"]
        if kind == "publish":
            await self._publish(conn, room, command)
        elif kind == "join":
            await self._join(conn, command, session)
        elif kind == "leave":
            await self._leave(conn, command)
        elif kind == "ping":
            conn.deliver_text(reply("pong", command.get("id")))
        elif kind in ("presence", "presence_stats"):
            await self._presence(conn, room, command)
        elif kind == "refresh" and session is not None:
            await self._refresh(conn, command, session)
        elif kind == "connect" and session is not None:
            raise ProtocolError(p.BAD_REQUEST, "already connected; send a refresh with a "
                                "new token")
        else:
            raise ProtocolError(p.UNKNOWN_TYPE, f"unknown command type {kind!r}; expected "
                                "publish, join, leave, ping, presence or presence_stats")

    async def _publish(self, conn: Connection, default_room: str, command: dict[str, Any]) -> None:
        room = check_room(command.get("room", default_room))
        options = self.manager.room_table.options(room)  # what applies: the room table
        if not options.client_publish:
            raise ProtocolError(p.FORBIDDEN, f"clients may not publish to {room!r}; "
                                f"{_ENABLE_PUBLISH}")
        if "data" not in command:
            raise ProtocolError(p.BAD_REQUEST, "publish needs 'data'")
        if room not in conn.rooms:
            raise ProtocolError(p.NOT_JOINED, f"join {room!r} before publishing to it")
        data = command["data"]
        command_id = command.get("id")
        self._check_room_limits(conn, room, options, data)
        if options.publish is not None:
            try:
                data = validate(options.publish, data)
            except ValidationError as exc:
                conn.deliver_text(invalid_frame(exc, command_id))
                return
        handled = True
        if options.on_publish is not None:
            data = await self._run_hook(options.on_publish, conn, room, data)
            if data is None:  # the handler dropped it
                if command_id is not None:
                    conn.deliver_text(reply("published", command_id, room=room, offset=None,
                                            dropped=True))
                return
        elif (hook := self.manager.settings.on_message) is not None:
            data = await self._run_hook(hook, conn, room, data)
        else:
            handled = False
        exclude = None if self.manager.settings.echo_to_sender else frozenset((conn.id,))
        try:
            await self.manager.publish(room, data, exclude=exclude, sender=conn.id,
                                       user=conn.user_id,
                                       wait=command_id is not None,
                                       on_done=_publish_reply(conn, room, command_id))
        except ValidationError as exc:  # the room's message model
            if not handled:  # the client's own data: the client's mistake
                conn.deliver_text(invalid_frame(exc, command_id))
                return
            logger.warning("wsplugin: a publish hook returned data that does not fit the "
                           "message model of %r: %s", room, error_detail(exc))
            raise ProtocolError(p.BAD_REQUEST, "the server's handler returned data that does "
                                "not fit the room's message model") from None
        except p.UnencodableData as exc:  # what the on_message hook returned
            logger.warning("wsplugin: on_message returned a value that cannot be sent: %s", exc)
            raise ProtocolError(p.BAD_REQUEST, str(exc)) from None

    def _check_room_limits(self, conn: Connection, room: str, options: RoomOptions,
                           data: Any) -> None:
        """The room's ``rate_limit`` (per connection) and ``max_message_bytes`` (the data as
        compact JSON), each an ``error`` frame that leaves the connection open."""
        rate = options.rate_limit
        if rate is not None and not self.manager.room_rates.allow(conn.id, room, rate):
            raise ProtocolError(p.RATE_LIMITED, f"more than {rate[0]} publishes at once or "
                                f"{rate[1]:g}/s in {room!r}")
        limit = options.max_message_bytes
        if limit is not None and limit < self.manager.settings.max_message_bytes \
                and json_size(data) > limit:
            raise ProtocolError(p.TOO_BIG, f"data larger than {limit} bytes in {room!r}")

    async def _run_hook(self, hook: Any, conn: Connection, room: str, data: Any) -> Any:
        """An ``on_message`` hook or a typed handler: its result; ``ValueError`` rejects."""
        try:
            return await maybe_await(hook(conn, room, data))
        except ValidationError as exc:  # its text holds input values: only the summary
            raise ProtocolError(p.REJECTED, error_detail(exc)) from None
        except ValueError as exc:
            raise ProtocolError(p.REJECTED, str(exc) or "message rejected") from None
        except Exception as exc:
            raise HookFailed() from exc

    async def _join(self, conn: Connection, command: dict[str, Any],
                    session: TokenSession | None) -> None:
        room = check_room(_required(command, "room"))
        settings = self.manager.settings
        if room not in conn.rooms:
            if len(conn.rooms) >= settings.max_rooms_per_connection:
                raise ProtocolError(p.TOO_MANY_ROOMS, f"at most "
                                    f"{settings.max_rooms_per_connection} rooms per connection")
            if (session is not None and not session.grant.allows(room)) \
                    or not await self._authorized(conn.identity, room):
                raise ProtocolError(p.FORBIDDEN, f"not allowed to join {room!r}")
        head: dict[str, Any] = {"type": "joined", "room": room}
        if command.get("id") is not None:
            head["id"] = command["id"]
        await self.manager.add_member(conn, room, reply=head, position=command_position(command))

    async def _authorized(self, identity: Any, room: str) -> bool:
        """What ``authorize(identity, room)`` says (no hook: yes; it raised: no)."""
        hook = self.manager.room_table.options(room).authorize  # the room's, or the global
        if hook is None:
            return True
        try:
            return bool(await maybe_await(hook(identity, room)))
        except Exception as exc:
            logger.info("wsplugin: authorize hook refused %s: %r", room, exc)
            return False

    async def _refresh(self, conn: Connection, command: dict[str, Any],
                       session: TokenSession) -> None:
        """A new token for the same user: its expiry replaces the old one; rooms it no longer
        allows are left (``left`` with ``reason: forbidden``); then ``refreshed``. A token
        that fails leaves everything as it was."""
        token = command.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(p.BAD_REQUEST, "refresh needs a 'token' string")
        assert self._tokens is not None
        try:
            grant = await self._verify(self._tokens, token)
        except TokenError as exc:
            raise ProtocolError(p.UNAUTHORIZED, exc.reason) from None
        if grant.user.id != session.grant.user.id:
            raise ProtocolError(p.FORBIDDEN, "the token is for another user (its sub)")
        if conn.closed:
            return
        withdrawn = session.withdrawn(grant)
        session.replace(grant)
        self.manager.connection_changed(conn)  # the registry shows the new expiry
        for room in withdrawn:
            await self.manager.remove_member(
                conn, room, reply={"type": "left", "room": room, "reason": "forbidden"})
        conn.deliver_text(reply("refreshed", command.get("id"), **expiry_fields(grant)))

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
                   "client_publish=True or a list of room patterns; env WSPLUGIN_CLIENT_PUBLISH),"
                   " a rooms pattern with RoomOptions(client_publish=True), a handler "
                   "@manager.on_publish(pattern), or an on_message hook")


def query_of(websocket: WebSocket) -> QueryParams | None:
    """The handshake URL's query, parsed for one use (``websocket.query_params`` would keep
    it on the websocket for the connection's lifetime); ``None`` for most URLs, which have
    none (no parse)."""
    query = websocket.scope.get("query_string")
    return QueryParams(query) if query else None


def _asked_for(websocket: WebSocket) -> tuple[bool, tuple[str, int] | None]:
    """What the handshake URL's query asks: ``?batch=1``, coalesce what is sent to this
    connection (see docs/protocol.md); ``?epoch=&offset=``, a position to recover from."""
    query = query_of(websocket)
    if query is None:
        return False, None
    return query.get("batch", "") in ("1", "true", "yes"), query_position(query)


def _welcome(conn: Connection, room: str, grant: Grant | None) -> dict[str, Any]:
    welcome = {"type": "welcome", "connection_id": conn.id, "rooms": [room]}
    if grant is not None:
        welcome.update(expiry_fields(grant))
    return welcome


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

ROOM_REFUSED = "room not allowed"
"""The reason of a 4003 close: the token (its ``rooms``) or ``authorize`` refused the room."""
