"""Shared permessage-deflate: compress each message once, for every compressed connection.

RFC 7692 lets a server *not* use context takeover even when the client did not ask for
``server_no_context_takeover``: a message compressed by a fresh raw-deflate compressor and
ended with a sync flush (its trailing ``00 00 ff ff`` removed, RSV1 set) inflates correctly
whatever the client's window holds, as long as the compressor's window is no larger than
the negotiated ``server_max_window_bits``. So one compressed frame per message and window
size is valid for every connection that negotiated that window (uWebSockets' "shared
compressor"), and the fast path writes it like any other prebuilt frame.

The catch is uvicorn's own compressor on the same connection (the frames it writes for a
user route's ``websocket.send_text``, or anything else that takes the ASGI ``send``): it
uses context takeover, so after the client has inflated frames it never saw, its
back-references would point into the wrong history. :func:`deflate_variant` therefore
turns context takeover off in the negotiated extension object itself
(``local_no_context_takeover``): websockets then starts a fresh compressor for every
message uvicorn sends, and every compressed frame of the connection, ours or uvicorn's,
stands alone. ``tests/test_deflate.py`` shows both: interleavings that inflate with the
switch, and the corrupted frame a client gets without it.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import Any

from wsplugin.types import ASGIMessage

try:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
except ImportError:  # pragma: no cover - websockets is not installed: no fast path at all
    PerMessageDeflate = None  # type: ignore[assignment,misc]

MIN_SIZE = 100
"""Messages shorter than this (in bytes) go uncompressed: deflate saves a few bytes at best
and costs the client an inflate (see docs/compression.md for the measurement)."""

LEVEL = 6
MEM_LEVEL = 8
FRAME_KEY_PREFIX = "wsplugin.frame.deflate"
_SYNC_TAIL = b"\x00\x00\xff\xff"

Encoder = Callable[[ASGIMessage], bytes]


def compress(payload: bytes, bits: int) -> bytes:
    """``payload`` deflated by a fresh compressor with a ``2**bits`` window, sync-flushed,
    without the trailing empty block (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, MEM_LEVEL)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def header(first: int, size: int) -> bytes:
    """The header of an unmasked frame with first byte ``first`` and ``size`` bytes."""
    if size < 126:
        return struct.pack("!BB", first, size)
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def deflate_frame(message: ASGIMessage, bits: int) -> bytes:
    """The compressed frame of a shared send event (or its plain frame when compressing
    does not pay), cached in the event under the key of this window size."""
    key = f"{FRAME_KEY_PREFIX}{bits}"
    frame: bytes | None = message.get(key)
    if frame is not None:
        return frame
    text = message.get("text")
    payload = text.encode() if text is not None else bytes(message.get("bytes") or b"")
    first = 0x81 if text is not None else 0x82
    data = compress(payload, bits) if len(payload) >= MIN_SIZE else payload
    if len(data) < len(payload):
        frame = header(first | 0x40, len(data)) + data  # RSV1: compressed
    else:  # short or incompressible: an uncompressed frame is always allowed
        frame = header(first, len(payload)) + payload
    message[key] = frame
    return frame


def encoder(bits: int) -> tuple[str, Encoder]:
    """The cache key and frame encoder of the ``bits`` window variant."""
    return f"{FRAME_KEY_PREFIX}{bits}", functools.partial(deflate_frame, bits=bits)


def negotiated_bits(extensions: list[Any]) -> int | str:
    """The ``server_max_window_bits`` of a connection whose only extension is
    permessage-deflate, or why its frames cannot be prebuilt (the ASGI path then)."""
    if PerMessageDeflate is None or len(extensions) != 1 \
            or type(extensions[0]) is not PerMessageDeflate:
        names = ", ".join(type(extension).__name__ for extension in extensions)
        return f"the connection negotiated extensions the fast path cannot frame ({names})"
    extension = extensions[0]
    bits = getattr(extension, "local_max_window_bits", None)
    if not isinstance(bits, int) or not 9 <= bits <= 15 \
            or not isinstance(getattr(extension, "local_no_context_takeover", None), bool):
        return ("websockets' PerMessageDeflate changed (local_max_window_bits, "
                "local_no_context_takeover are missing)")
    return bits


def share_compression(extension: Any, bits: int) -> tuple[str, Encoder]:
    """Make uvicorn's own compressor on this connection context-free (see the module
    docstring; websockets reads the flag at every message) and return the cache key and
    encoder of the shared frames for its window size."""
    extension.local_no_context_takeover = True
    return encoder(bits)
