"""What the dashboard needs from a ``WebSocketManager``: a structural protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from wsplugin.events import Event
from wsplugin.info import ConnectionInfo


class EventSource(Protocol):
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]: ...


class ManagerLike(Protocol):
    @property
    def events(self) -> EventSource: ...

    @property
    def node_id(self) -> str: ...

    async def connections(
        self, room: str | None = None, *, user: str | None = None
    ) -> Sequence[ConnectionInfo]: ...

    async def rooms(self) -> Mapping[str, int]: ...

    async def stats(self) -> Mapping[str, int]: ...

    async def health(self) -> Mapping[str, Any]: ...

    def room_stats(self, rooms: Iterable[str] | None = None
                   ) -> Mapping[str, Mapping[str, int]]: ...

    async def broadcast(self, room: str, data: Any) -> int: ...

    async def broadcast_all(self, data: Any) -> int: ...

    async def send(self, connection_id: str, data: Any) -> bool: ...

    async def kick(self, connection_id: str, *, reason: str = "") -> bool: ...

    async def kick_user(self, user_id: str, *, reason: str = "") -> int: ...


async def cluster_nodes(manager: ManagerLike) -> list[Any]:
    """``await manager.nodes()`` when the manager has it (a cluster backend), else []."""
    nodes = getattr(manager, "nodes", None)
    if nodes is None:
        return []
    result = await nodes()
    return list(result) if result is not None else []
