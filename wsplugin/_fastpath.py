"""The fast path: write a frame built once per message straight to uvicorn's transport.

Through ASGI, every recipient costs a ``send`` coroutine, Starlette's exception wrapper,
and uvicorn re-encoding the same text into a new WebSocket frame. A server frame is not
masked, so for a connection without extensions (no permessage-deflate) the bytes on the
wire are the same for every recipient: build them once, then ``transport.write`` them.

This applies only when the connection is served by uvicorn's ``websockets-sansio`` protocol
(uvicorn's default when ``websockets`` is installed), negotiated no extension, is open, and
its transport is writable. Anything else (another server, wsproto, compression, a paused
transport, a closing socket) takes the ordinary ASGI ``send``, which handles it.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from wsplugin.types import ASGIMessage

logger = logging.getLogger("wsplugin")

RAW_SEND_KEY = "wsplugin.raw_send"
FRAME_KEY = "wsplugin.frame"
_SANSIO_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"

try:
    from websockets.protocol import State

    _OPEN: Any = State.OPEN
except ImportError:  # pragma: no cover - websockets is not installed: no fast path
    _OPEN = None


class RawSendMiddleware:
    """Remember the server's own ``send`` in the scope of websocket connections."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


def encode_frame(message: ASGIMessage) -> bytes:
    """The unmasked WebSocket frame for an ASGI send event, cached in the event itself."""
    frame: bytes | None = message.get(FRAME_KEY)
    if frame is not None:
        return frame
    text = message.get("text")
    if text is not None:
        opcode, payload = 0x81, text.encode()
    else:
        opcode, payload = 0x82, bytes(message.get("bytes") or b"")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", opcode, 126, size)
    else:
        header = struct.pack("!BBQ", opcode, 127, size)
    frame = header + payload
    message[FRAME_KEY] = frame
    return frame


class FastWriter:
    """Direct writes to one uvicorn websockets-sansio connection."""

    __slots__ = ("protocol", "state", "transport", "writable")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.state = protocol.conn  # websockets' ServerProtocol: state and extensions
        self.transport = protocol.transport
        self.writable = protocol.writable

    @classmethod
    def attach(cls, scope: Scope) -> FastWriter | None:
        """A writer for this connection, or ``None`` when the fast path does not apply."""
        raw_send = scope.get(RAW_SEND_KEY)
        protocol = getattr(raw_send, "__self__", None)
        if protocol is None or _OPEN is None or type(protocol).__module__ != _SANSIO_MODULE:
            return None
        try:
            writer = cls(protocol)
            if writer.state.extensions or writer.state.state is not _OPEN:
                return None
        except AttributeError:  # a uvicorn whose internals moved: stay on the ASGI path
            logger.debug("wsplugin: uvicorn internals changed, fast path off")
            return None
        return writer

    def ready(self) -> bool:
        """Open and writable: a frame may be written now."""
        return (
            self.writable.is_set()
            and not self.protocol.close_sent
            and self.state.state is _OPEN
            and not self.transport.is_closing()
        )

    def write(self, frame: bytes, *, paused_ok: bool = False) -> bool:
        """Write the frame if the connection is open (and writable, unless ``paused_ok``).

        ``paused_ok``: frames accepted while the transport was writable, earlier in this loop
        iteration, go out even if a write since then paused it (asyncio buffers them).
        """
        protocol = self.protocol
        if (
            protocol.close_sent
            or (not paused_ok and not self.writable.is_set())
            or self.state.state is not _OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True
