"""The position a client asks to recover from: ``?epoch=&offset=`` on the URL, or the
``epoch``/``offset`` of a ``join`` (see docs/history.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsplugin import protocol as p
from wsplugin.protocol import ProtocolError

MAX_OFFSET_DIGITS = 16
"""Digits of the largest offset (2**53 - 1, the largest integer a JavaScript number holds)."""


def query_position(query: Mapping[str, str]) -> tuple[str, int] | None:
    """``?epoch=<e>&offset=<n>``; a malformed offset can only fail to recover.

    The offset must be 1 to 16 ASCII digits: ``str.isdigit`` alone accepts other scripts'
    digits (``²``, ``٣``) that ``int`` refuses or reads, and ``int`` refuses more than 4,300
    digits. Anything else is offset -1, which no stream has (``recovered: false``).
    """
    epoch = query.get("epoch")
    if epoch is None:
        return None
    raw = query.get("offset", "")
    valid = len(raw) <= MAX_OFFSET_DIGITS and raw.isascii() and raw.isdigit()
    return epoch, int(raw) if valid else -1


def command_position(command: dict[str, Any]) -> tuple[str, int] | None:
    if "epoch" not in command and "offset" not in command:
        return None
    epoch, offset = command.get("epoch"), command.get("offset")
    if not isinstance(epoch, str) or isinstance(offset, bool) or not isinstance(offset, int):
        raise ProtocolError(p.BAD_REQUEST, "recovery needs a string 'epoch' and an integer "
                            "'offset'", command.get("id"))
    return epoch, offset
