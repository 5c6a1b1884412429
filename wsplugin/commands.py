"""Commands for one connection or one user, wherever they are connected.

``send``, ``kick``, ``join`` and ``leave`` name one connection: it is served here if it is
local, else the broker routes the command to the node that owns it. ``send_user`` and
``kick_user`` reach every connection of one user: here, and on every other node at once.
:meth:`Commands.run` is the receiving side, for a command another node routed here.

The manager's public methods of the same names delegate to :class:`Commands`; it reaches
back only through :class:`CommandOwner` (the hub, the broker, the membership path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

from wsplugin.arguments import check_room_arg, check_user_arg
from wsplugin.backends import Broker, Command
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.hub import Hub
from wsplugin.events import EventBus
from wsplugin.protocol import CloseCode, encode, frame_message
from wsplugin.rooms.typed import wire_data
from wsplugin.types import ASGIMessage, Data, Frame

logger = logging.getLogger("wsplugin")

RoomOp = Literal["join", "leave"]


class CommandOwner(Protocol):
    """What :class:`Commands` needs of the manager."""

    hub: Hub[Connection]
    broker: Broker
    events: EventBus

    async def add_member(self, conn: Connection, room: str, *,
                         reply: dict[str, Any] | None = None) -> bool: ...

    async def remove_member(self, conn: Connection, room: str, *,
                            reply: dict[str, Any] | None = None) -> bool: ...


class Commands:
    """By-id and by-user commands (see the module)."""

    def __init__(self, owner: CommandOwner, max_rooms_per_connection: int) -> None:
        self.owner = owner
        self.hub = owner.hub
        self.max_rooms = max_rooms_per_connection

    # ------------------------------------------------------------------ one connection
    async def send(self, connection_id: str, data: Data) -> bool:
        message, size, frame = encode(None, wire_data(None, data), None)
        conn = self._local(connection_id)
        if conn is not None:
            conn.deliver(message, size)
            return True
        return await self._route(Command("send", connection_id, frame=frame))

    async def kick(self, connection_id: str, reason: str) -> bool:
        conn = self._local(connection_id)
        if conn is not None:
            self._kick(conn, reason)
            return True
        return await self._route(Command("kick", connection_id, reason=reason))

    async def join_or_leave(self, connection_id: str, op: RoomOp, room: str) -> bool:
        check_room_arg(room)
        conn = self._local(connection_id)
        if conn is not None:
            return await self._member(conn, op, room)
        return await self._route(Command(op, connection_id, room=room))

    # ------------------------------------------------------------------ one user
    async def send_user(self, user_id: str, data: Data) -> int:
        check_user_arg(user_id)
        message, size, frame = encode(None, wire_data(None, data), None)
        local = self._send_user_here(user_id, message, size)
        return local + await self._everywhere(Command("send_user", "", frame=frame,
                                                      user=user_id))

    async def kick_user(self, user_id: str, reason: str) -> int:
        check_user_arg(user_id)
        local = self._kick_user_here(user_id, reason)
        return local + await self._everywhere(Command("kick_user", "", reason=reason,
                                                      user=user_id))

    # ------------------------------------------------------------------ from another node
    async def run(self, command: Command) -> int:
        """A command another node routed here: for one connection, 1 if it was here (else
        0); for a user, how many of the user's connections were here."""
        if command.user is not None:
            return self._user_command(command.op, command.user, command.frame, command.reason)
        conn = self._local(command.connection_id)
        if conn is None:
            return False
        if command.op == "send":
            message, size = frame_message(command.frame if command.frame is not None else "")
            return conn.deliver(message, size) or True
        if command.op == "kick":
            self._kick(conn, command.reason)
            return True
        if command.op in ("join", "leave") and command.room is not None:
            return await self._member(conn, command.op, command.room)
        return False

    def _user_command(self, op: str, user_id: str, frame: Frame | None, reason: str) -> int:
        if op == "send_user":
            message, size = frame_message(frame if frame is not None else "")
            return self._send_user_here(user_id, message, size)
        if op == "kick_user":
            return self._kick_user_here(user_id, reason)
        return 0

    # ------------------------------------------------------------------ here
    def _local(self, connection_id: str) -> Connection | None:
        conn = self.hub.connections.get(connection_id)
        return None if conn is None or conn.closed else conn

    def _send_user_here(self, user_id: str, message: ASGIMessage, size: int) -> int:
        return self._each_of_user(user_id, lambda conn: conn.deliver(message, size))

    def _kick_user_here(self, user_id: str, reason: str) -> int:
        return self._each_of_user(user_id, lambda conn: self._kick(conn, reason))

    def _each_of_user(self, user_id: str, act: Callable[[Connection], object]) -> int:
        """``act`` on each open connection of ``user_id`` here: how many."""
        done = 0
        for conn in self.hub.of_user(user_id):
            if not conn.closed:
                act(conn)
                done += 1
        return done

    def _kick(self, conn: Connection, reason: str) -> None:
        self.owner.events.emit("kicked", connection_id=conn.id, identity=conn.identity_text,
                               detail=reason)
        conn.close(CloseCode.KICKED, reason)

    async def _member(self, conn: Connection, op: RoomOp, room: str) -> bool:
        """A server-side join or leave of a local connection (it gets ``joined``/``left``)."""
        if op == "leave":
            await self.owner.remove_member(conn, room, reply={"type": "left", "room": room})
            return True
        member = room in conn.rooms
        if not member and len(conn.rooms) >= self.max_rooms:
            return False
        await self.owner.add_member(conn, room, reply=None if member else {"type": "joined",
                                                                              "room": room})
        return True

    # ------------------------------------------------------------------ elsewhere
    async def _route(self, command: Command) -> bool:
        """To the node that owns the connection; False (and a warning) if the broker fails."""
        try:
            return await self.owner.broker.command(command)
        except Exception as exc:
            logger.warning("wsplugin: %s for %s failed: %r", command.op, command.connection_id,
                           exc)
            return False

    async def _everywhere(self, command: Command) -> int:
        """A user command for the other nodes; 0 (and a warning) if the broker fails."""
        try:
            return await self.owner.broker.command_all(command)
        except Exception as exc:
            logger.warning("wsplugin: %s on the other nodes failed: %r", command.op, exc)
            return 0
