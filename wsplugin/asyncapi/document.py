"""The AsyncAPI 3.0.0 document of the managed endpoint, built from the room table.

One channel per room pattern (the address is always ``{prefix}/{room}``; the pattern says
which rooms, and their models type the ``data`` of ``publish`` and ``message``), the ``*``
channel for rooms no pattern matches, every frame as a message with its JSON Schema and an
example, and one operation per frame and channel: the server *receives* what clients send
and *sends* the rest. The server entry comes from the request (:func:`with_server`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from wsplugin.asyncapi.examples import example_of
from wsplugin.asyncapi.frames import FRAMES, Frame
from wsplugin.patterns import example_room
from wsplugin.rooms import RoomOptions

Mode = Literal["validation", "serialization"]
TYPED = {"client.publish": "publish", "server.message": "message"}
"""The frames whose ``data`` a room's model types: which option of :class:`RoomOptions`."""
_MODES: dict[str, Mode] = {"publish": "validation", "message": "serialization"}

DESCRIPTION = (
    "JSON text frames over one WebSocket per client, opened at `{address}` (the URL room). "
    "A client may join more rooms; each channel below is a room pattern, the first matching "
    "pattern applies, `*` is every other room. Commands may carry an `id`, echoed on the reply; "
    "an `error` frame keeps the connection open.")


def pointer(*tokens: str) -> str:
    """A JSON pointer as a URI fragment, each token escaped."""
    escaped = (quote(t.replace("~", "~0").replace("/", "~1"), safe="!$&'()*+,;=:@-._~")
               for t in tokens)
    return "#/" + "/".join(escaped)


def _ref(*tokens: str) -> dict[str, str]:
    return {"$ref": pointer(*tokens)}


class _Schemas:
    """The models of every pattern, as JSON Schemas sharing ``components.schemas``."""

    def __init__(self, entries: Sequence[tuple[str, RoomOptions]]) -> None:
        wanted: list[tuple[type[BaseModel], Mode]] = []
        for _, options in entries:
            for option, mode in _MODES.items():
                model = getattr(options, option)
                if model is not None and (model, mode) not in wanted:
                    wanted.append((model, mode))
        refs, top = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
        self.refs = refs
        self.defs: dict[str, Any] = top.get("$defs", {})

    def of(self, model: type[BaseModel], mode: Mode) -> dict[str, Any]:
        """The model's own schema, inline (what it nests is referenced)."""
        name = str(self.refs[(model, mode)]["$ref"]).rsplit("/", 1)[-1]
        return copy.deepcopy(self.defs[name])


def _message(frame: Frame, data: dict[str, Any] | None = None, example_data: Any = None,
             model: str | None = None, room: str | None = None) -> dict[str, Any]:
    example = dict(frame.example)
    if data is not None and "data" in example:
        example["data"] = example_data
    if room is not None and "room" in example:
        example["room"] = room
    typed = f" (data: {model})" if model else ""
    return {
        "name": frame.type,
        "title": f"{frame.type}{typed}",
        "summary": frame.summary,
        "contentType": "application/json",
        "payload": frame.schema(data),
        "examples": [{"name": frame.type, "payload": example}],
        "x-wsplugin-direction": "client to server" if frame.direction == "client"
                                else "server to client",
    }


def _room_examples(pattern: str) -> list[str]:
    room = example_room(pattern)
    return [] if room is None else [room]


def _channel(key: str, options: RoomOptions, address: str,
             schemas: _Schemas) -> dict[str, Any]:
    messages: dict[str, Any] = {}
    examples = _room_examples(key)
    for frame in FRAMES:
        option = TYPED.get(frame.key)
        model = None if option is None else getattr(options, option)
        if model is None:
            messages[frame.key] = _ref("components", "messages", frame.key)
            continue
        schema = schemas.of(model, _MODES[option or ""])
        messages[frame.key] = _message(frame, schema, example_of(schema, schemas.defs),
                                       model.__name__, examples[0] if examples else None)
    which = "every room no other pattern matches" if key == "*" else f"rooms matching `{key}`"
    room: dict[str, Any] = {"description": f"The room: {which}"}
    if examples:
        room["examples"] = examples
    return {
        "address": address,
        "title": key,
        "summary": f"Rooms: {which}",
        "description": describe_options(options),
        "parameters": {"room": room},
        "messages": messages,
        "x-wsplugin-pattern": key,
        "x-wsplugin-options": public_options(options),
    }


def public_options(options: RoomOptions) -> dict[str, Any]:
    """:meth:`RoomOptions.describe` for a public document: hooks only as whether one is set
    (their names are the app's internals)."""
    described = options.describe()
    for hook in ("authorize", "on_publish"):
        described[hook] = described[hook] is not None
    return described


def describe_options(options: RoomOptions) -> str:
    """What applies to a room, as one line of text."""
    parts = []
    for name, value in public_options(options).items():
        if value is None or value is False:
            continue
        parts.append(name if value is True else f"{name}: {value}")
    return "; ".join(parts) or "the global defaults (clients may not publish)"


def _operations(key: str, channel: dict[str, Any]) -> dict[str, Any]:
    suffix = "" if key == "*" else f" [{key}]"
    operations: dict[str, Any] = {}
    for frame in FRAMES:
        operation: dict[str, Any] = {
            "action": "receive" if frame.direction == "client" else "send",
            "channel": _ref("channels", key),
            "title": frame.type,
            "summary": frame.summary,
            "messages": [_ref("channels", key, "messages", frame.key)],
        }
        if frame.replies:
            replies = [f"server.{r}" for r in frame.replies] + ["server.error"]
            operation["reply"] = {
                "channel": _ref("channels", key),
                "messages": [_ref("channels", key, "messages", r) for r in replies
                             if r in channel["messages"]],
            }
        operations[f"{frame.key}{suffix}"] = operation
    return operations


def build_document(entries: Sequence[tuple[str, RoomOptions]], prefix: str, title: str,
                   version: str) -> dict[str, Any]:
    """The document without ``servers`` (see :func:`with_server`): ``entries`` are the room
    table's (pattern, options), ``*`` last."""
    schemas = _Schemas(entries)
    address = f"{prefix}/{{room}}"
    channels = {key: _channel(key, options, address, schemas) for key, options in entries}
    operations: dict[str, Any] = {}
    for key, channel in channels.items():
        operations.update(_operations(key, channel))
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version,
                 "description": DESCRIPTION.format(address=address)},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas.defs,
            "messages": {frame.key: _message(frame) for frame in FRAMES},
        },
    }


def with_server(document: dict[str, Any], host: str, secure: bool,
                root_path: str) -> dict[str, Any]:
    """``document`` with the server a request reached: ``ws``/``wss``, host, root path."""
    server: dict[str, Any] = {
        "host": host, "protocol": "wss" if secure else "ws",
        "description": "This server, as the request for this document reached it"}
    if root_path:
        server["pathname"] = root_path
    return {**document, "servers": {"default": server}}
