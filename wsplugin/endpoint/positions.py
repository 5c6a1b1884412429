"""The position a client asks to recover from: ``?epoch=&offset=`` on the URL, or the
``epoch``/``offset`` of a ``join`` (see docs/history.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsplugin import protocol as p
from wsplugin.protocol import ProtocolError


def query_position(query: Mapping[str, str]) -> tuple[str, int] | None:
    """``?epoch=<e>&offset=<n>``; a malformed offset can only fail to recover."""
    epoch = query.get("epoch")
    if epoch is None:
        return None
    raw = query.get("offset", "")
    return epoch, int(raw) if raw.isdigit() else -1


def command_position(command: dict[str, Any]) -> tuple[str, int] | None:
    if "epoch" not in command and "offset" not in command:
        return None
    epoch, offset = command.get("epoch"), command.get("offset")
    if not isinstance(epoch, str) or isinstance(offset, bool) or not isinstance(offset, int):
        raise ProtocolError(p.BAD_REQUEST, "recovery needs a string 'epoch' and an integer "
                            "'offset'", command.get("id"))
    return epoch, offset
