"""WebSocketManager: the public face used by routes, dependency injection and the admin.

It never touches a socket itself: it encodes each message once, hands local deliveries to
the hub and cross-node traffic to the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.websockets import WebSocket

from wsplugin.arguments import check_room_arg, check_user_arg
from wsplugin.backends import Broker, BrokerError, Command, create_broker
from wsplugin.backends.base import ALL_ROOMS
from wsplugin.backends.history_store import PublishDone
from wsplugin.commands import Commands
from wsplugin.config import Settings, build_settings
from wsplugin.counters import Counters, Tally
from wsplugin.delivery.connection import Connection
from wsplugin.delivery.hub import FlushQueue, Hub
from wsplugin.endpoint.user_route import UserConnection
from wsplugin.events import EventBus
from wsplugin.heap import tune as tune_gc
from wsplugin.history import HistoryPage
from wsplugin.history.streams import Streams
from wsplugin.info import ConnectionInfo
from wsplugin.presence import Presence, PresenceStats, UserPresence
from wsplugin.presence.tracker import Tracker
from wsplugin.protocol import CloseCode, encode, encode_json, frame_message
from wsplugin.rooms import PublishHandler, RoomOptions
from wsplugin.rooms.rates import RoomRates
from wsplugin.rooms.table import RoomTable
from wsplugin.rooms.typed import wire_data
from wsplugin.types import ASGIReceive, ASGISend, Data, Frame, Identity
from wsplugin.user_slots import Claim, UserSlots
from wsplugin.users import user_of
from wsplugin.workers import warn_if_memory_shared

logger = logging.getLogger("wsplugin")

T = TypeVar("T")
H = TypeVar("H", bound=PublishHandler)
_NO_ONE: frozenset[str] = frozenset()

SHUTDOWN_GRACE = 3.0
"""Seconds the shutdown waits for close frames to reach clients."""


def _describe_client(websocket: WebSocket) -> tuple[str, str]:
    """``host:port`` of the peer and its user agent, read from the scope (the websocket's
    ``client`` and ``headers`` would build and keep objects for its lifetime)."""
    scope = websocket.scope
    client = scope.get("client")
    remote = f"{client[0]}:{client[1]}" if client else ""
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return remote, value.decode("latin-1")
    return remote, ""


def _broker_options(settings: Settings) -> dict[str, Any]:
    if settings.backend.startswith("memory"):
        return {}
    return {"prefix": settings.redis_prefix, "registry_ttl": settings.registry_ttl}


def new_connection_id() -> str:
    """32 random hex digits, like a UUID4's hex without building the UUID (a third of the
    time: it is paid for every connection)."""
    return os.urandom(16).hex()


def _connected_at(conn: Connection) -> float:
    return conn.connected_at


def _exclude_set(exclude: str | Iterable[str] | None) -> frozenset[str] | None:
    if exclude is None:
        return None
    if isinstance(exclude, str):
        return frozenset((exclude,))
    return frozenset(exclude) or None


class WebSocketManager:
    """Rooms, fan-out and connection control for one app (and, with Redis, one cluster)."""

    def __init__(self, settings: Settings | None = None, *, broker: Broker | None = None) -> None:
        self.settings = settings if settings is not None else build_settings({})
        if broker is None:
            broker = create_broker(self.settings.backend, **_broker_options(self.settings))
        self.broker = broker
        if not self.broker.node_id:
            self.broker.node_id = uuid.uuid4().hex[:12]
        self.events = EventBus(node=self.broker.node_id)
        self.counters = Counters()
        self.tally = Tally()  # metrics: handshakes, closes by code, delivery latency
        self.flushes = FlushQueue(self.tally.flushed)  # end-of-iteration writes
        self.hub: Hub[Connection] = Hub(self.flushes)
        self.user_slots = UserSlots(self._open_count)  # max_connections_per_user, this node
        self.started_at = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self._heartbeat: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop the manager runs on, once started (read by metrics exporters)."""
        self._last_publish_warning = 0.0
        self._on_publish_error = self.publish_failed  # bound once: publish is a hot path
        self.room_table = RoomTable(self.settings)  # what applies to each room
        self.room_rates = RoomRates()  # per-room publish rates, per connection
        self.draining: set[Connection] = set()  # sockets that pushed back (the heartbeat's)
        self.streams = Streams(self)
        self.tracker = Tracker(self)  # presence rooms
        self.commands = Commands(self, self.settings.max_rooms_per_connection)  # by id, by user

    @property
    def node_id(self) -> str:
        """This process's id in the cluster (the broker may renew it after a fork)."""
        return self.broker.node_id

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the broker and the heartbeat (the app's lifespan does this)."""
        if self._started:
            return
        self._started = True
        self._stopping = False
        if self.settings.gc_tuning:
            tune_gc()  # freeze the app's own objects; fewer promotions (wsplugin/heap.py)
        self.broker.attach_events(self.events)
        warn_if_memory_shared(self.settings.backend)
        self.streams.start()
        self.tracker.start()
        await self.broker.start(self)
        self.loop = asyncio.get_running_loop()
        self._heartbeat = self.loop.create_task(self._heartbeat_loop())

    async def stop(self) -> None:
        """Tell every client to reconnect elsewhere (1001), clean up, stop the broker."""
        if not self._started:
            return
        self._stopping = True
        for conn in list(self.hub.connections.values()):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await self.streams.stop()
        await self.tracker.stop()
        await self.broker.stop()
        self._started = False

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            self.close_stalled()

    def close_stalled(self) -> int:
        """Close (4008) connections whose writer made no progress for ``heartbeat_timeout``
        (only those whose socket pushed back can be stalled: idle ones cost nothing here)."""
        now = asyncio.get_running_loop().time()
        limit = self.settings.heartbeat_timeout
        closed = 0
        for conn in list(self.draining):
            if conn.stalled_for(now) > limit:
                self.counters.slow_closes += 1
                self.events.emit("slow_close", connection_id=conn.id,
                                 identity=conn.identity_text, detail="writer stalled")
                conn.close(CloseCode.TOO_SLOW, "too slow: no progress")
                closed += 1
        return closed

    # ------------------------------------------------------------------ connections
    async def claim_slot(self, identity: Identity) -> Claim | None:
        """Before a handshake is accepted: the id its connection will have, holding one of
        its user's ``max_connections_per_user`` slots on every node.

        ``None``: the user has them all (counted as a ``user_limit`` refusal). Hand the
        claim to :meth:`open_connection`, or to :meth:`release_slot` if the handshake
        fails. With a limit, ``BadUser`` (a ``ValueError``) when ``identity`` is an invalid
        user (the managed endpoint checked it already; a user route learns it here).
        """
        limit = self.settings.max_connections_per_user
        claim = Claim(new_connection_id(), None)
        if limit is None:
            return claim  # nothing to hold
        user = user_of(identity, self.settings.max_user_info_bytes)
        if user is None:
            return claim
        if not self.user_slots.claim(user.id, claim.connection_id, limit):
            self.tally.refuse("user_limit")  # metrics
            return None
        try:
            granted = await self.broker.claim_user_slot(user.id, claim.connection_id, limit)
        except Exception as exc:  # the broker's own failures are soft; a bug is not hidden
            logger.warning("wsplugin: user slot claim failed (%r); this node's count holds", exc)
            granted = True
        if not granted:
            self.user_slots.settle(user.id, claim.connection_id)
            self.tally.refuse("user_limit")  # metrics
            return None
        claim.user_id = user.id
        return claim

    def release_slot(self, claim: Claim) -> None:
        """The handshake of ``claim`` failed before its connection opened: free its slot."""
        if claim.settled or claim.user_id is None:
            return
        claim.settled = True
        self.user_slots.settle(claim.user_id, claim.connection_id)
        self.broker.release_user_slot(claim.connection_id)

    def _open_count(self, user_id: str) -> int:
        conns = self.hub.users.get(user_id)
        return 0 if conns is None else len(conns)

    def open_connection(
        self,
        websocket: WebSocket,
        send: ASGISend,
        receive: ASGIReceive,
        *,
        identity: Identity = None,
        coalesce: bool = False,
        claim: Claim | None = None,
        expires_at: float | None = None,
    ) -> Connection:
        """The one factory of connections: register an accepted websocket that the current
        task reads (the managed endpoint, or :meth:`connect`). Its writer is chosen here.
        ``claim``: from :meth:`claim_slot` (its id becomes the connection's);
        ``expires_at``: when its token expires (listings show it)."""
        remote, user_agent = _describe_client(websocket)
        user = user_of(identity, self.settings.max_user_info_bytes)  # BadUser (ValueError)
        connection_id = new_connection_id() if claim is None else claim.connection_id
        conn = Connection(
            self, connection_id, send, receive, identity=identity, user=user, remote=remote,
            user_agent=user_agent, coalesce=coalesce or self.settings.coalesce,
            websocket=websocket, expires_at=expires_at,
        )
        conn.bind_reader(asyncio.current_task())
        self.hub.add(conn)
        if claim is not None and not claim.settled:
            claim.settled = True  # the hub's per-user index counts the connection now
            if claim.user_id is not None:
                self.user_slots.settle(claim.user_id, claim.connection_id)
        self.tally.accepted += 1  # metrics
        if self.events:
            self.events.emit("connected", connection_id=conn.id, identity=conn.identity_text,
                             detail=user_agent)
        self.broker.connection_opened(conn)
        return conn

    def connection_changed(self, conn: Connection) -> None:
        """What listings show of a local connection changed (a refreshed token's expiry):
        the cluster registry records it again, in the background."""
        self.broker.connection_changed(conn)

    def connection_closed(self, conn: Connection, code: int, reason: str) -> None:
        """Called exactly once per connection by :meth:`Connection._finish`."""
        rooms = self.hub.remove(conn)
        self.room_rates.forget(conn.id)
        self.streams.rooms_left(rooms)  # history rooms: forget what nobody here is in
        self.tally.closed(code)  # metrics
        if self.events:
            self.events.emit("disconnected", connection_id=conn.id,
                             identity=conn.identity_text, detail=f"{code} {reason}".strip())
        if not self._stopping:  # stopping, the broker drops the whole node at once
            self.broker.connection_closed(conn, rooms)
            if self.tracker.active:
                self.tracker.leave_soon(conn.id, rooms)

    # ------------------------------------------------------------------ membership
    # The one membership path: every join and leave, whoever asks (the managed endpoint, a
    # user route, a by-id command from any node), goes through add_member / remove_member.

    async def add_member(
        self, conn: Connection, room: str, *, reply: dict[str, Any] | None = None,
        position: tuple[str, int] | None = None, first: bool = False,
    ) -> bool:
        """Make ``conn`` a member of ``room``, then send ``reply`` (``welcome``/``joined``).

        Local bookkeeping, the broker's subscription and the ``joined`` event
        (:meth:`change_room`); in a history room also the room's position in ``reply`` and the
        recovery of the client's ``position`` (see :mod:`wsplugin.history`); in a presence
        room the user's presence and, after the reply, the room's snapshot
        (:mod:`wsplugin.presence`). ``first``: the reply is the connection's first frame
        (``welcome``), so in a plain room it goes out before the join. False if ``conn``
        already was a member (``reply`` goes out anyway).
        """
        spec = self.streams.spec(room)
        if spec is not None:
            joined = await self.streams.join(conn, room, spec, reply, position)
        else:
            if reply is not None and first:
                conn.deliver_text(encode_json(reply))
            joined = await self.change_room(conn, room, joining=True)
            if reply is not None and not first:
                conn.deliver_text(encode_json(reply))
        if self.tracker.active and (presence := self.tracker.spec(room)) is not None \
                and room in conn.rooms:
            await self.tracker.join(conn, room, presence)
        return joined

    async def remove_member(
        self, conn: Connection, room: str, *, reply: dict[str, Any] | None = None
    ) -> bool:
        """Take ``conn`` out of ``room``, then send ``reply`` (``left``); False if it was not in."""
        if not await self.change_room(conn, room, joining=False):
            return False
        if reply is not None:
            conn.deliver_text(encode_json(reply))
        if self.tracker.active and self.tracker.spec(room) is not None:
            await self.tracker.leave(conn.id, room)
        return True

    async def change_room(self, conn: Connection, room: str, *, joining: bool) -> bool:
        """The bookkeeping step of :meth:`add_member` and :meth:`remove_member`, no frame:
        the hub, the ``joined``/``left`` event, the broker's subscription. False if nothing
        changed (already a member, or not one)."""
        if not (self.hub.join(conn, room) if joining else self.hub.leave(conn, room)):
            return False
        if not joining:
            self.room_rates.forget(conn.id, room)
            self.streams.rooms_left((room,))
        if self.events:
            self.events.emit("joined" if joining else "left", connection_id=conn.id,
                             room=room, identity=conn.identity_text)
        await self.broker.rooms_changed(conn)
        return True

    def connect(
        self,
        websocket: Any,
        *,
        rooms: Iterable[str] = (),
        identity: Identity = None,
        coalesce: bool = False,
    ) -> UserConnection:
        """Hand a user-owned websocket to the manager: ``async with manager.connect(ws) as c``."""
        room_list = [check_room_arg(room) for room in rooms]
        return UserConnection(self, websocket, room_list, identity, coalesce)

    # ------------------------------------------------------------------ broker side
    def publish_failed(self, exc: BaseException) -> None:
        """Count a publish the broker refused; warn at most every 10 seconds (the one place)."""
        self.counters.publish_errors += 1
        now = time.monotonic()
        if now - self._last_publish_warning > 10:
            self._last_publish_warning = now
            level = logging.WARNING if isinstance(exc, BrokerError) else logging.ERROR
            logger.log(level, "wsplugin: a publish failed in the broker (%r); errors so far: %d",
                       exc, self.counters.publish_errors)

    # BrokerHandler -----------------------------------------------------------------
    def deliver_remote(self, room: str, frame: Frame, exclude: frozenset[str]) -> int:
        started = time.perf_counter()  # metrics: delivery latency
        message, size = frame_message(frame)
        if room == ALL_ROOMS:
            delivered = self.hub.deliver_all(message, size, exclude)
        else:
            delivered = self.hub.deliver(room, message, size, exclude)
        self.tally.delivered(started, "remote", self.flushes)  # metrics
        return delivered

    async def run_command(self, command: Command) -> int:
        return await self.commands.run(command)

    def local_connections(
        self, room: str | None = None, *, user: str | None = None
    ) -> list[ConnectionInfo]:
        if user is not None:
            return [c.info() for c in self.hub.of_user(user) if room is None or room in c.rooms]
        if room is None:
            return [c.info() for c in self.hub.connections.values()]
        members = self.hub.rooms.get(room)
        return [] if members is None else [c.info() for c in members.members.values()]

    def local_connection_list(
        self, room: str | None = None, *, user: str | None = None
    ) -> Sequence[Connection]:
        """This node's connections (in ``room``, of ``user``), newest first, as the
        connection objects themselves: no record is built (``info()`` of a page of them is
        what a listing shows). All of them: a view that copies nothing; a room's: its
        members sorted (~3 ms for 20,000)."""
        if user is not None:
            found = [c for c in self.hub.of_user(user) if room is None or room in c.rooms]
        elif room is None:
            return self.hub.newest_first()  # connection order is age order
        else:
            members = self.hub.rooms.get(room)
            found = [] if members is None else list(members.members.values())  # join order
        found.sort(key=_connected_at, reverse=True)
        return found

    async def remote_connections(
        self, room: str | None = None, *, user: str | None = None
    ) -> list[ConnectionInfo]:
        """The other nodes' connections (in ``room``, of ``user``): none in memory."""
        remote = await self._remote(self.broker.remote_connections(room), [])
        return [info for info in remote if user is None or info.user == user]

    def local_rooms(self) -> list[str]:
        return list(self.hub.rooms)

    def local_stats(self) -> dict[str, int]:
        c = self.counters
        return {
            "connections": len(self.hub.connections),
            "rooms": len(self.hub.rooms),
            "messages_in": c.messages_in,
            "messages_out": c.messages_out,
            "bytes_in": c.bytes_in,
            "bytes_out": c.bytes_out,
            "dropped": c.dropped,
            "slow_closes": c.slow_closes,
            "publish_errors": c.publish_errors,
            **self.streams.stats(),  # history rooms: resets, gaps filled...
        }

    def room_stats(self, rooms: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Local rooms (or those of ``rooms`` that exist here): member count, messages
        delivered into the room, drops."""
        hub_rooms = self.hub.rooms
        picked = hub_rooms.items() if rooms is None else (
            (name, hub_rooms[name]) for name in rooms if name in hub_rooms)
        return {
            name: {"members": len(r.members), "messages": r.messages, "dropped": r.dropped}
            for name, r in picked
        }

    # ------------------------------------------------------------------ rooms
    def room_options(self, room: str) -> RoomOptions:
        """What applies to ``room``: the options of the first matching pattern of the room
        table (see docs/rooms.md), resolved against the global settings."""
        return self.room_table.options(check_room_arg(room))

    def on_publish(self, pattern: str) -> Callable[[H], H]:
        """Register a typed handler for client publishes in rooms matching ``pattern``::

            @manager.on_publish("chat-*")
            async def chat(conn: Connection, room: str, msg: ChatIn) -> ChatOut | None: ...

        ``msg`` is validated against the model of its annotation (a pydantic model; other
        annotations get the plain data). The return value is what members receive (a model
        instance is sent as its JSON), ``None`` drops the message, ``ValueError`` rejects it
        (``error`` ``rejected``). It replaces ``on_message`` in those rooms and allows
        clients to publish there.
        """

        def register(handler: H) -> H:
            self.room_table.add_handler(pattern, handler)
            return handler

        return register

    def room_messages(self) -> dict[str, int]:
        """Local rooms: messages delivered into each (what the admin's rates are made of)."""
        return {name: room.messages for name, room in self.hub.rooms.items()}

    # ------------------------------------------------------------------ public API
    async def broadcast(
        self, room: str, data: Data, *, exclude: str | Iterable[str] | None = None,
        sender: str | None = None,
    ) -> int:
        """Send ``data`` to every member of ``room`` on every node; returns local deliveries."""
        check_room_arg(room)
        delivered = await self.publish(room, data, exclude=_exclude_set(exclude), sender=sender)
        self.events.emit("broadcast", room=room, detail=str(delivered))
        return delivered

    async def publish(
        self, room: str | None, data: Data, *, exclude: frozenset[str] | None = None,
        sender: str | None = None, user: str | None = None, wait: bool = True,
        on_done: PublishDone | None = None,
    ) -> int:
        """The one publish path: encode once, deliver locally, hand to the broker.

        ``room=None`` publishes to every connection. No event is emitted. A broker failure
        is counted in ``publish_errors`` (and logged at most every 10 s) here, and only here.
        The caller learns how it ended in one of two ways:

        - ``on_done(position, error)``: once the broker accepted the message (``position``:
          where a history room stored it, reported after this node delivered it; ``None``
          in other rooms) or refused it. Called for every history-room publish, and for
          other rooms when the caller waits (``wait``).
        - without ``on_done``: a history room's publish raises the failure (nothing was
          stored, nobody received it); in other rooms local delivery went on regardless.

        ``wait=False`` (a client's own message) queues a plain room's cross-node publish
        without waiting for the broker. ``sender`` and ``user``: the publishing connection
        and its user id, in the ``message`` envelope. Returns the local deliveries (a
        history room: its local members).

        ``data`` may be a pydantic model instance (sent as its JSON). In a room with a
        ``message`` model, other data is validated against it here, once: a mismatch raises
        ``ValueError`` (pydantic's ``ValidationError``) and nothing is sent.
        """
        if isinstance(data, BaseModel) or (self.room_table.has_message_models
                                           and room is not None):
            message_model = None if room is None else self.room_table.options(room).message
            data = wire_data(message_model, data)
        if room is not None and (spec := self.streams.spec(room)) is not None:
            return await self.streams.publish(room, spec, data, exclude, sender, user, on_done)
        started = time.perf_counter()  # metrics: delivery latency
        message, size, frame = encode(room, data, sender, user)
        if room is None:
            delivered = self.hub.deliver_all(message, size, exclude)
        else:
            delivered = self.hub.deliver(room, message, size, exclude)
        self.tally.delivered(started, "local", self.flushes)  # metrics
        target = ALL_ROOMS if room is None else room
        others = exclude or _NO_ONE
        error: BaseException | None = None
        try:  # wait=False: queued by the broker (the in-memory one has nothing to forward)
            nowait = not wait and self.broker.publish_nowait(target, frame, others,
                                                             self._on_publish_error)
            if not nowait:
                await self.broker.publish(target, frame, others)
        except Exception as exc:
            self.publish_failed(exc)
            error = exc
        if on_done is not None and (wait or error is not None):
            on_done(None, error)
        return delivered

    async def broadcast_all(self, data: Data) -> int:
        """Send ``data`` to every connection on every node; returns local deliveries."""
        delivered = await self.publish(None, data)
        self.events.emit("broadcast", room=None, detail=str(delivered))
        return delivered

    async def send(self, connection_id: str, data: Data) -> bool:
        """Send ``data`` to one connection, wherever it lives; False if it is unknown. A
        pydantic model instance is sent as its JSON."""
        return await self.commands.send(connection_id, data)

    async def kick(self, connection_id: str, *, reason: str = "") -> bool:
        """Close one connection with 4000 and ``reason``; False if it is unknown."""
        return await self.commands.kick(connection_id, reason)

    async def send_user(self, user_id: str, data: Data) -> int:
        """Send ``data`` to every connection of user ``user_id`` on every node; returns how
        many connections it was handed to. A pydantic model instance is sent as its JSON."""
        return await self.commands.send_user(user_id, data)

    async def kick_user(self, user_id: str, *, reason: str = "") -> int:
        """Close every connection of user ``user_id`` on every node with 4000 and
        ``reason``; returns how many."""
        return await self.commands.kick_user(user_id, reason)

    async def join(self, connection_id: str, room: str) -> bool:
        """Add a connection to ``room`` (the client gets ``joined``); False if unknown."""
        return await self.commands.join_or_leave(connection_id, "join", room)

    async def leave(self, connection_id: str, room: str) -> bool:
        """Remove a connection from ``room`` (the client gets ``left``); False if unknown."""
        return await self.commands.join_or_leave(connection_id, "leave", room)

    # ------------------------------------------------------------------ cluster view
    # The local truth plus what the broker knows of the other nodes (nothing, in memory).
    # A registry that fails leaves the local view: every query goes through _remote.

    async def _remote(self, query: Awaitable[T], empty: T) -> T:
        try:
            return await query
        except Exception as exc:
            logger.warning("wsplugin: cluster registry unavailable (%r); local view only", exc)
            return empty

    async def connections(
        self, room: str | None = None, *, user: str | None = None
    ) -> list[ConnectionInfo]:
        """Every connection in the cluster (or the members of ``room``, or the connections
        of user ``user``, or both)."""
        if room is not None:
            check_room_arg(room)
        if user is not None:
            check_user_arg(user)
        return self.local_connections(room, user=user) + await self.remote_connections(
            room, user=user)

    async def rooms(self) -> dict[str, int]:
        """Room -> member count, cluster-wide."""
        counts = {name: len(room.members) for name, room in self.hub.rooms.items()}
        for name, count in (await self._remote(self.broker.remote_rooms(), {})).items():
            counts[name] = counts.get(name, 0) + count
        return counts

    async def nodes(self) -> list[dict[str, Any]]:
        """This node and every other live node of the cluster."""
        return [self._this_node(), *await self._remote(self.broker.nodes(), [])]

    def _this_node(self) -> dict[str, Any]:
        return {
            "id": self.node_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started": self.started_at, "last_heartbeat": time.time(),
            "connections": len(self.hub.connections), "stats": self.local_stats(), "self": True,
        }

    async def stats(self) -> dict[str, int]:
        """Counters summed over every node (one node with the in-memory backend)."""
        totals = self.local_stats()
        for node in await self._remote(self.broker.nodes(), []):
            for key, value in (node.get("stats") or {}).items():
                if key != "rooms" and isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
        remote_rooms = await self._remote(self.broker.remote_rooms(), {})
        totals["rooms"] += sum(1 for name in remote_rooms if name not in self.hub.rooms)
        return totals

    async def health(self) -> dict[str, Any]:
        """``status`` ok/degraded, ``backend``, ``subscribed``, ``last_self_ping_age``..."""
        health = dict(await self.broker.health())
        health.setdefault("status", "ok")
        health["node"] = self.node_id
        health["connections"] = len(self.hub.connections)
        return health

    # ------------------------------------------------------------------ history
    async def presence(self, room: str) -> dict[str, UserPresence]:
        """Who is online in a presence room, cluster-wide: user id -> their connections
        and public info. ``ValueError`` for a room without presence."""
        self._presence_room(room)
        return await self.tracker.users(room)

    async def presence_stats(self, room: str) -> PresenceStats:
        """How many users (each once) and connections a presence room has, cluster-wide."""
        self._presence_room(room)
        return await self.tracker.stats(room)

    def _presence_room(self, room: str) -> Presence:
        check_room_arg(room)
        spec = self.tracker.spec(room)
        if spec is None:
            raise ValueError(f"room {room!r} has no presence (see the presence setting)")
        return spec

    async def history(
        self, room: str, *, since: int | None = None, limit: int = 100
    ) -> HistoryPage:
        """The stored messages of a history room (after offset ``since``, or the newest
        ``limit``), oldest first, and the room's position. ``ValueError`` for a plain room."""
        check_room_arg(room)
        return await self.streams.history(room, since, limit)

