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
back-references would point into the wrong history. Sharing therefore turns context
takeover off in the negotiated extension object itself, for the library that serves the
connection (:meth:`Library.share`): ``local_no_context_takeover`` in websockets,
``server_no_context_takeover`` in wsproto. Both libraries read the
flag at the end of every message they compress and then start a fresh compressor, so every
compressed frame of the connection, ours or uvicorn's, stands alone.
``tests/test_deflate.py`` shows both: interleavings that inflate with the switch, and the
corrupted frame a client gets without it, under both uvicorn protocols.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsplugin.types import ASGIMessage

try:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
except ImportError:  # pragma: no cover - websockets is not installed
    PerMessageDeflate = None  # type: ignore[assignment,misc]

try:
    from wsproto.extensions import PerMessageDeflate as WsprotoDeflate
except ImportError:  # pragma: no cover - wsproto is not installed
    WsprotoDeflate = None  # type: ignore[assignment,misc]

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


@functools.cache
def encoder(bits: int) -> tuple[str, Encoder]:
    """The cache key and frame encoder of the ``bits`` window variant (made once per
    variant, not per connection)."""
    return f"{FRAME_KEY_PREFIX}{bits}", functools.partial(deflate_frame, bits=bits)


@dataclass(frozen=True)
class Library:
    """Where one websocket library keeps what was negotiated for permessage-deflate."""

    name: str
    deflate: type | None
    """Its permessage-deflate extension class (``None``: the library is not installed)."""
    bits: str
    """The attribute holding the server's negotiated window bits."""
    switch: str
    """The attribute that turns context takeover off for what the server sends."""
    compressor: str
    """The attribute holding the compressor of what the server sends. With context
    takeover off, the library makes a new one for every message it compresses (websockets:
    when a message starts; wsproto: when the attribute is ``None``), so :meth:`standalone`
    drops the one made at the handshake."""
    inbound_switch: str | None = None
    """The attribute that says the client compresses without context takeover, if the
    extension exists before the handshake's answer is sent (websockets: uvicorn
    negotiates when the request arrives and sends the answer at ``accept``)."""
    decompressor: str = ""
    """The attribute holding the inflater of what the client sends."""

    def negotiated_bits(self, extensions: list[Any]) -> int | str:
        """The window bits of a connection whose only negotiated extension is
        permessage-deflate, ``0`` without extensions, or why its frames cannot be prebuilt
        (the ASGI path then)."""
        if not extensions:
            return 0
        if self.deflate is None or len(extensions) != 1 \
                or type(extensions[0]) is not self.deflate:
            names = ", ".join(type(extension).__name__ for extension in extensions)
            return f"the connection negotiated extensions the fast path cannot frame ({names})"
        bits = getattr(extensions[0], self.bits, None)
        switch = getattr(extensions[0], self.switch, None)
        if not isinstance(bits, int) or not 9 <= bits <= 15 or not isinstance(switch, bool):
            return f"{self.name}'s PerMessageDeflate changed ({self.bits}, {self.switch})"
        return bits

    def standalone(self, extension: Any) -> None:
        """Make uvicorn's own compressor on this connection context-free (see the module
        docstring) and drop the one it holds: every message uvicorn compresses from now on
        gets a fresh compressor, released when the message ends, so an idle connection
        holds no deflate state (about 39 KB with websockets' settings in uvicorn)."""
        setattr(extension, self.switch, True)
        setattr(extension, self.compressor, None)

    def share(self, extension: Any, bits: int) -> tuple[str, Encoder]:
        """:meth:`standalone`, and the cache key and encoder of the shared frames of
        ``bits``."""
        self.standalone(extension)
        return encoder(bits)

    def client_standalone(self, extension: Any, answer: object) -> str | None:
        """Before the handshake's answer is sent: the answer's ``Sec-WebSocket-Extensions``
        with ``client_no_context_takeover`` added (RFC 7692 section 7.1.1.2: a server may
        include it in any answer), the negotiated ``extension`` switched to match and its
        inflater dropped. The client then compresses each message on its own and the
        server keeps no inflater between messages (websockets makes one per compressed
        message and drops it at the message's end). ``None``: not applicable (another
        library, an unexpected answer), nothing changed."""
        switch = self.inbound_switch
        if switch is None or not isinstance(answer, str) or "," in answer \
                or not answer.startswith("permessage-deflate") \
                or not isinstance(getattr(extension, switch, None), bool):
            return None
        if not getattr(extension, switch):
            setattr(extension, switch, True)
            answer += "; client_no_context_takeover"
        if hasattr(extension, self.decompressor):
            delattr(extension, self.decompressor)
        return answer


WEBSOCKETS = Library("websockets", PerMessageDeflate, "local_max_window_bits",
                     "local_no_context_takeover", "encoder", "remote_no_context_takeover",
                     "decoder")
WSPROTO = Library("wsproto", WsprotoDeflate, "server_max_window_bits",
                  "server_no_context_takeover", "_compressor")
