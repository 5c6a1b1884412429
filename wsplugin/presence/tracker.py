"""Presence on one node: joins and leaves through the store, events, batched diffs.

The membership path (``WebSocketManager.add_member``/``remove_member``, and a closing
connection) tells the tracker; the tracker asks the store, which returns what changed
exactly once cluster-wide. That node emits the events (``user_joined``, ``user_left``,
``room_occupied``, ``room_vacated``) and announces the change to every node. Each node
collects the joins and leaves of a room for ``presence_interval`` seconds and sends its
local members one ``presence_diff`` with all of them (a join and a leave of one user in the
same interval cancel out), so a mass reconnect costs each member a few frames, not one per
member. A leave is due ``grace`` seconds after a user's last connection went: the node
that saw it go sweeps the room then; rooms left behind by a node that died are swept by
whichever node finds them due (:meth:`PresenceStore.sweep_due`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from wsplugin.backends.presence_store import Change, Info, PresenceStore
from wsplugin.node_parts import NodeParts
from wsplugin.presence import Presence, PresenceStats, UserPresence
from wsplugin.protocol import encode_json, text_message

if TYPE_CHECKING:
    from wsplugin.delivery.connection import Connection

logger = logging.getLogger("wsplugin")

SWEEP_SLACK = 0.05
"""Seconds added to a grace period before its sweep (clocks and timers are not exact)."""


TrackerOwner = NodeParts
"""What presence uses of the manager: only its parts."""


class _Diff:
    """The joins and leaves of one room waiting for the next ``presence_diff``."""

    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        self.joins: dict[str, Info] = {}
        self.leaves: set[str] = set()

    def add(self, change: Change) -> None:
        for user, info in change.joins.items():
            if user in self.leaves:
                self.leaves.discard(user)  # left and came back within the interval
            else:
                self.joins[user] = info
        for user in change.leaves:
            if user in self.joins:
                del self.joins[user]  # joined and left within the interval
            else:
                self.leaves.add(user)

    def frame(self, room: str) -> str | None:
        if not self.joins and not self.leaves:
            return None
        return encode_json({
            "type": "presence_diff", "room": room,
            "joins": {user: {"info": info} for user, info in self.joins.items()},
            "leaves": {user: {} for user in sorted(self.leaves)},
        })


class Tracker:
    """The presence rooms of one manager (node)."""

    def __init__(self, owner: TrackerOwner) -> None:
        self.owner = owner
        settings = owner.settings
        self.table = owner.room_table  # which rooms track presence: the one room table
        self.active = self.table.tracks_presence
        self.interval = settings.presence_interval
        self.sweep_period = max(0.5, min(settings.registry_ttl / 3, 5.0))
        self.store: PresenceStore | None = None
        self._diffs: dict[str, _Diff] = {}
        self._sweeps: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.active:
            return
        self.store = self.owner.broker.presence_store()
        if self.store is None:
            raise RuntimeError(f"the {self.owner.broker.scheme}:// backend has no presence; "
                               "remove the presence setting or use memory:// or redis://")
        self.store.sink = self
        self._spawn(self._sweep_loop())

    async def stop(self) -> None:
        for handle in self._sweeps.values():
            handle.cancel()
        self._sweeps.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spec(self, room: str) -> Presence | None:
        """The presence options of ``room`` (one cached lookup), None for other rooms."""
        return self.table.options(room).presence if self.active else None

    def _store(self) -> PresenceStore:
        if self.store is None:
            raise RuntimeError("presence is not started (the manager is not running)")
        return self.store

    # ------------------------------------------------------------------ membership
    async def join(self, conn: Connection, room: str, spec: Presence) -> None:
        """``conn`` entered ``room``: record it, then send it the room's snapshot."""
        user = conn.user
        info = None if user is None else user.info
        self._changed(await self._store().add(room, conn.id, conn.user_id, info, spec.grace))
        if conn.closed or room not in conn.rooms:  # it went while the store answered
            await self.leave(conn.id, room)
            return
        conn.deliver_text(await self.snapshot_frame(room, spec))

    async def leave(self, conn_id: str, room: str) -> None:
        """``conn_id`` left ``room`` (or closed): its user leaves after the grace."""
        due = await self._store().remove(room, conn_id)
        if due is not None:
            self._schedule_sweep(room, due)

    def leave_soon(self, conn_id: str, rooms: list[str]) -> None:
        """A connection closed (not awaited): leave its presence rooms in the background."""
        for room in rooms:
            if self.spec(room) is not None:
                self._spawn(self._quietly(self.leave(conn_id, room)))

    # ------------------------------------------------------------------ reading
    async def snapshot_frame(self, room: str, spec: Presence, command_id: Any = None) -> str:
        snapshot = await self._store().snapshot(room, spec.max_list)
        frame: dict[str, Any] = {"type": "presence", "room": room}
        if snapshot.users is None:
            frame["truncated"] = True
        else:
            frame["users"] = {user: {"connections": p.connections, "info": p.info}
                              for user, p in snapshot.users.items()}
        frame["count"] = {"users": snapshot.stats.users,
                          "connections": snapshot.stats.connections}
        if command_id is not None:
            frame["id"] = command_id
        return encode_json(frame)

    async def stats_frame(self, room: str, command_id: Any = None) -> str:
        stats = await self.stats(room)
        frame: dict[str, Any] = {"type": "presence_stats", "room": room,
                                 "users": stats.users, "connections": stats.connections}
        if command_id is not None:
            frame["id"] = command_id
        return encode_json(frame)

    async def users(self, room: str) -> dict[str, UserPresence]:
        snapshot = await self._store().snapshot(room, 2**31)
        return snapshot.users or {}

    async def stats(self, room: str) -> PresenceStats:
        return await self._store().stats(room)

    # ------------------------------------------------------------------ changes
    def _changed(self, change: Change) -> None:
        """A change this node made: its events here, its diff on every node."""
        if not change:
            return
        emit = self.owner.events.emit
        room = change.room
        if change.occupied:
            emit("room_occupied", room=room)
        for user, info in change.joins.items():
            emit("user_joined", room=room, identity=user,
                 detail="" if info is None else json.dumps(info, separators=(",", ":")))
        for user in change.leaves:
            emit("user_left", room=room, identity=user)
        if change.vacated:
            emit("room_vacated", room=room)
        if change.joins or change.leaves:
            self._store().announce(change)

    def on_presence(self, change: Change) -> None:
        """A change from any node: batched into the room's next ``presence_diff``."""
        spec = self.spec(change.room)
        if spec is None or not spec.join_leave or change.room not in self.owner.hub.rooms:
            return
        diff = self._diffs.get(change.room)
        if diff is None:
            diff = self._diffs[change.room] = _Diff()
            asyncio.get_running_loop().call_later(self.interval, self._flush, change.room)
        diff.add(change)

    def _flush(self, room: str) -> None:
        diff = self._diffs.pop(room, None)
        frame = None if diff is None else diff.frame(room)
        if frame is None:
            return
        message, size = text_message(frame)
        self.owner.counters.presence_diffs += self.owner.hub.deliver(room, message, size, None)

    # ------------------------------------------------------------------ grace periods
    def _schedule_sweep(self, room: str, delay: float) -> None:
        old = self._sweeps.pop(room, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._sweeps[room] = loop.call_later(delay + SWEEP_SLACK, self._sweep_soon, room)

    def _sweep_soon(self, room: str) -> None:
        self._sweeps.pop(room, None)
        self._spawn(self._quietly(self._sweep(room)))

    async def _sweep(self, room: str) -> None:
        self._changed(await self._store().sweep(room))

    async def _sweep_loop(self) -> None:
        """Rooms that a dead node left behind, and this node's presence rooms kept alive."""
        while True:
            await asyncio.sleep(self.sweep_period)
            await self._quietly(self._sweep_due())

    async def _sweep_due(self) -> None:
        store = self._store()
        await store.refresh([room for room in self.owner.hub.rooms if self.spec(room)])
        for change in await store.sweep_due():
            self._changed(change)

    async def _quietly(self, call: Any) -> None:
        try:
            await call
        except Exception as exc:
            logger.warning("wsplugin: presence update failed: %r", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
