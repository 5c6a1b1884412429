"""Request and response models of the JSON API (they document it in OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from wsplugin.events import EventKind
from wsplugin.info import ConnectionInfo
from wsplugin.protocol import ROOM_PATTERN
from wsplugin.users import MAX_USER_ID_LENGTH

ROOM_NAME = f"^{ROOM_PATTERN.pattern}$"
"""What the core accepts as a room name, for the schema (so a bad one is a documented 422)."""


class ErrorDetail(BaseModel):
    detail: str


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description, **extra}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No credentials, or wrong ones"),
    429: _error("Too many failed logins from this address", headers=RETRY_AFTER),
    503: _error("A session cookie, while the session store (Redis) is unreachable"),
}
"""What every authenticated route can answer besides its own results."""
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    400: _error("The body is not valid JSON"),
    403: _error("A viewer, a cross-site request, or a missing or wrong CSRF token"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such room")}


class ConnectionPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ConnectionInfo]


class Room(BaseModel):
    name: str
    members: int
    messages: int = Field(description="Messages published to the room on this node")
    dropped: int
    rate: float = Field(description="Messages per second, over the last sample")


class RoomPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[Room]


class RoomDetail(Room):
    connections: ConnectionPage
    history: bool = Field(False, description="The room keeps history: its /history answers")
    presence: bool = Field(False, description="The room tracks presence: its /presence answers")
    options: dict[str, Any] | None = Field(
        None, description="What applies to the room (manager.room_options): who may publish, "
        "history, presence, models and hooks by name, per-room limits")


class OnlineUser(BaseModel):
    id: str
    connections: int = Field(description="Its connections in the room (0 during the grace)")
    info: dict[str, Any] | None = Field(None, description="Public info, untrusted input")


class RoomPresence(BaseModel):
    """Who is online in a presence room, cluster-wide (at most ``limit`` users listed)."""

    room: str
    users: list[OnlineUser]
    count: dict[str, int] = Field(description="users (each once) and connections")


class Overview(BaseModel):
    node: str
    totals: dict[str, int]
    rates: dict[str, float]
    health: dict[str, Any]
    nodes: list[Any]
    dashboards: int


class EventItem(BaseModel):
    seq: int
    time: float
    kind: EventKind
    connection_id: str | None
    room: str | None
    identity: str | None
    detail: str
    node: str


class Me(BaseModel):
    name: str
    role: str
    csrf_token: str


class BroadcastRequest(BaseModel):
    room: str | None = Field(
        None, pattern=ROOM_NAME, description="A room, or null for every connection"
    )
    data: Any = Field(description="Any JSON value, delivered as a message envelope")


class SendRequest(BaseModel):
    connection_id: str
    data: Any


class KickRequest(BaseModel):
    connection_id: str
    reason: str = Field("", max_length=120, description="Sent in the 4000 close frame")


class KickUserRequest(BaseModel):
    user_id: str = Field(min_length=1, max_length=MAX_USER_ID_LENGTH,
                         description="Every connection of this user, on every node")
    reason: str = Field("", max_length=120, description="Sent in each 4000 close frame")


class KickUserResult(BaseModel):
    ok: bool = Field(description="At least one connection was kicked")
    kicked: int = Field(description="Connections closed, cluster-wide")


class ActionResult(BaseModel):
    ok: bool
    delivered: int | None = None


class HistoryItem(BaseModel):
    offset: int
    data: Any
    sender: str | None


class RoomHistory(BaseModel):
    """A history room's stored messages, oldest first, and its position."""

    room: str
    epoch: str = Field(description="Changes whenever the storage lost the stream")
    offset: int = Field(description="Offset of the newest message (0: none yet)")
    messages: list[HistoryItem]
