"""The in-memory broker: one process, nothing crosses a boundary.

Every method answers the contract with nothing to do: no other node to publish to, no
registry, no remote connection, room or node. The per-connection hooks are plain no-op
calls (no task, no snapshot), so the one-process hot paths cost what they cost without a
broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wsplugin.backends.base import Broker, BrokerHandler, Command, LocalConnection
from wsplugin.backends.history_store import HistoryStore, MemoryHistory
from wsplugin.backends.presence_store import MemoryPresence, PresenceStore
from wsplugin.info import ConnectionInfo
from wsplugin.types import Frame


class MemoryBroker(Broker):
    scheme = "memory"

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.node_id = uuid.uuid4().hex[:12]
        self._history = MemoryHistory()  # a new epoch per process start
        self._presence = MemoryPresence()

    def history_store(self) -> HistoryStore:
        return self._history

    def presence_store(self) -> PresenceStore:
        return self._presence

    async def start(self, handler: BrokerHandler) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, room: str, frame: Frame, exclude: frozenset[str]) -> None:
        return None

    def publish_nowait(
        self,
        room: str,
        frame: Frame,
        exclude: frozenset[str],
        on_error: Callable[[BaseException], None],
    ) -> bool:
        return True  # nothing to forward: done

    def connection_opened(self, conn: LocalConnection) -> None:
        return None

    async def rooms_changed(self, conn: LocalConnection) -> None:
        return None

    def connection_closed(self, conn: LocalConnection, rooms: Sequence[str]) -> None:
        return None

    async def subscribe(self, room: str) -> None:
        return None

    async def unsubscribe(self, room: str) -> None:
        return None

    async def command(self, command: Command) -> bool:
        return False

    async def register(self, info: ConnectionInfo) -> None:
        return None

    async def unregister(self, connection_id: str) -> None:
        return None

    async def remote_connections(self, room: str | None = None) -> list[ConnectionInfo]:
        return []

    async def remote_rooms(self) -> Mapping[str, int]:
        return {}

    async def nodes(self) -> list[dict[str, Any]]:
        return []

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": "memory", "subscribed": True, "last_self_ping_age": 0.0}
