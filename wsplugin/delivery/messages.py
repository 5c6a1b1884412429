"""Messages encoded once: the ASGI send event shared by every recipient, and its size."""

from __future__ import annotations

from wsplugin.protocol import UnencodableData, message_frame
from wsplugin.types import ASGIMessage, Data, Frame


def text_message(text: str) -> tuple[ASGIMessage, int]:
    """A prebuilt ASGI send event and its size, shared by every recipient."""
    size = len(text) if text.isascii() else len(text.encode())
    return {"type": "websocket.send", "text": text}, size


def bytes_message(data: bytes) -> tuple[ASGIMessage, int]:
    return {"type": "websocket.send", "bytes": data}, len(data)


def frame_message(frame: Frame) -> tuple[ASGIMessage, int]:
    """The ASGI send event of an encoded frame (text or binary)."""
    return bytes_message(frame) if isinstance(frame, bytes) else text_message(frame)


def encode_head(room: str, data: Data, sender: str | None) -> str:
    """A history room's ``message`` frame without its closing brace (the store appends the
    offset). ``UnencodableData`` for bytes (they cannot carry an offset) or non-JSON data."""
    if isinstance(data, bytes | bytearray | memoryview):
        raise UnencodableData(f"room {room!r} keeps history: its messages must be JSON, "
                              "not bytes")
    try:
        frame = message_frame(room, data, sender)
        frame.encode()  # UnicodeEncodeError: a lone surrogate
    except (TypeError, ValueError) as exc:
        raise UnencodableData(f"data must be JSON-serialisable: {exc}") from None
    return frame[:-1]


def encode(room: str | None, data: Data, sender: str | None) -> tuple[ASGIMessage, int, Frame]:
    """Encode a payload once: a ``message`` envelope for JSON values, bytes as they are.

    ``UnencodableData`` if ``data`` is not JSON-serialisable (or holds a lone surrogate).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        message, size = bytes_message(raw)
        return message, size, raw
    try:
        frame = message_frame(room, data, sender)
        message, size = text_message(frame)  # UnicodeEncodeError: a lone surrogate
    except (TypeError, ValueError) as exc:
        raise UnencodableData(f"data must be JSON-serialisable or bytes: {exc}") from None
    return message, size, frame
