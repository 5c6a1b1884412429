"""Room options: one table of room patterns says what applies to each room.

``install_ws_manager(app, rooms={"chat-*": RoomOptions(...)})`` maps glob patterns on room
names to :class:`RoomOptions`: who may publish, history, presence, the models of published
and broadcast data, per-room size and rate limits, and ``authorize``. The first matching
pattern applies, like a routing table; what it leaves unset (``None``) comes from the
shorthand keywords (typed handlers, ``history``, ``presence``, ``client_publish`` patterns)
and then from the global settings. See :mod:`wsplugin.rooms.table` and docs/rooms.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel

from wsplugin.history import History, normalise_history
from wsplugin.presence import Presence, normalise_presence
from wsplugin.types import AuthorizeHook

PublishHandler = Callable[..., Any]
"""``(connection, room, msg) -> data | None``, sync or async: what members receive (a model
instance is sent as its JSON), ``None`` drops the message, ``ValueError`` rejects it."""

ENV_FIELDS = frozenset(("client_publish", "history", "presence", "max_message_bytes",
                        "rate_limit"))
"""The options ``WSPLUGIN_ROOMS`` (JSON) may set: the ones that are not Python objects."""


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _rate(value: Any) -> tuple[int, float] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and len(value) == 2 and _is_count(value[0]) \
            and isinstance(value[1], int | float) and not isinstance(value[1], bool) \
            and value[1] > 0:
        return int(value[0]), float(value[1])
    raise ValueError(f"RoomOptions.rate_limit must be None or (burst, messages_per_second) "
                     f"with a positive integer burst and a positive rate, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RoomOptions:
    """What applies to the rooms of one pattern; ``None``: not set here.

    ``client_publish``: members may publish (a typed handler allows it too). ``history``,
    ``presence``: as the settings of those names. ``publish``: the pydantic model a client's
    ``data`` must validate against (else ``error`` ``invalid``). ``message``: the model of
    what members receive (``broadcast`` of other data raises ``ValueError``).
    ``max_message_bytes``: the largest ``data`` of a client publish, as compact JSON (else
    ``error`` ``too_big``). ``rate_limit``: ``(burst, messages/s)`` of publishes per
    connection in one room (else ``error`` ``rate_limited``). ``authorize``: ``(identity,
    room) -> bool``, instead of the global one. ``on_publish``: a typed handler, as
    ``@manager.on_publish(pattern)`` registers.

    ``manager.room_options(room)`` returns one resolved: ``client_publish`` and
    ``authorize`` say what applies, the global settings included.
    """

    client_publish: bool | None = None
    history: History | None = None
    presence: Presence | None = None
    publish: type[BaseModel] | None = None
    message: type[BaseModel] | None = None
    max_message_bytes: int | None = None
    rate_limit: tuple[int, float] | None = None
    authorize: AuthorizeHook | None = None
    on_publish: PublishHandler | None = None

    def __post_init__(self) -> None:
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "client_publish": (lambda v: isinstance(v, bool), "True or False"),
            "history": (lambda v: isinstance(v, History), "History(size, ttl)"),
            "presence": (lambda v: isinstance(v, Presence), "Presence(...)"),
            "publish": (_is_model, "a pydantic model class"),
            "message": (_is_model, "a pydantic model class"),
            "max_message_bytes": (_is_count, "a positive integer"),
            "authorize": (callable, "callable"),
            "on_publish": (callable, "callable"),
        }
        for name, (check, expect) in checks.items():
            value = getattr(self, name)
            if value is not None and not check(value):
                raise ValueError(f"RoomOptions.{name} must be None or {expect}, got {value!r}")
        object.__setattr__(self, "rate_limit", _rate(self.rate_limit))

    def merged(self, fallback: RoomOptions) -> RoomOptions:
        """These options, with what they leave unset taken from ``fallback``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in values.items():
            if value is None:
                values[name] = getattr(fallback, name)
        return RoomOptions(**values)

    def describe(self) -> dict[str, Any]:
        """The options as JSON (models and hooks by name), for the admin and the docs."""
        history, presence = self.history, self.presence
        return {
            "client_publish": self.client_publish,
            "history": None if history is None else
            {"size": history.size, "ttl": history.ttl, "meta_ttl": history.meta_ttl},
            "presence": None if presence is None else
            {"join_leave": presence.join_leave, "grace": presence.grace,
             "max_list": presence.max_list},
            "publish": _name(self.publish),
            "message": _name(self.message),
            "max_message_bytes": self.max_message_bytes,
            "rate_limit": None if self.rate_limit is None else list(self.rate_limit),
            "authorize": _name(self.authorize),
            "on_publish": _name(self.on_publish),
        }


def _name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "__qualname__", None) or type(value).__qualname__)


def room_options_of(pattern: str, value: Any) -> RoomOptions:
    """One entry of ``rooms``: ``RoomOptions``, or a dict of the fields JSON can hold."""
    if isinstance(value, RoomOptions):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"rooms[{pattern!r}] must be RoomOptions(...) or a dict, got {value!r}")
    unknown = set(value) - ENV_FIELDS
    if unknown:
        raise ValueError(f"rooms[{pattern!r}]: unknown or non-JSON field(s) {sorted(unknown)}; "
                         f"a dict may set {sorted(ENV_FIELDS)}")
    options = dict(value)
    if isinstance(options.get("history"), Mapping):
        options["history"] = normalise_history({pattern: options["history"]})[pattern]
    presence = options.get("presence")
    if presence is False:
        options["presence"] = None
    elif presence is True or isinstance(presence, Mapping):
        options["presence"] = normalise_presence(
            {pattern: {} if presence is True else presence})[pattern]
    try:
        return RoomOptions(**options)
    except ValueError as exc:
        raise ValueError(f"rooms[{pattern!r}]: {exc}") from None


def normalise_rooms(value: Any) -> dict[str, RoomOptions]:
    """``{"chat-*": RoomOptions(...)}`` (or dicts of JSON fields), in declaration order."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("rooms must map room patterns to RoomOptions(...)")
    rooms: dict[str, RoomOptions] = {}
    for pattern, options in value.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"rooms patterns must be non-empty strings, got {pattern!r}")
        rooms[pattern] = room_options_of(pattern, options)
    return rooms


def parse_rooms_env(raw: str) -> dict[str, RoomOptions]:
    """``WSPLUGIN_ROOMS``: a JSON object, e.g. ``{"chat-*": {"client_publish": true,
    "history": {"size": 100}, "presence": true, "max_message_bytes": 4096,
    "rate_limit": [20, 5]}}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return normalise_rooms(value)
