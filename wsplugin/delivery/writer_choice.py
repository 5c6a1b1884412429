"""Which :class:`~wsplugin.delivery.writer.FrameWriter` a connection gets, chosen once.

:func:`choose_writer` picks one when the connection opens and never again. It checks, at
that moment, every server attribute the fast path will use; on the first surprise (another
server, another uvicorn protocol, a renamed attribute, an extension other than
permessage-deflate, a middleware that wraps websocket sends, ``fast_path=False``) the
connection gets the ASGI writer. Which path a server got is logged once per process at
INFO (``wsplugin`` logger).
"""

from __future__ import annotations

import logging
from typing import Any

from wsplugin.delivery import uvicorn_writer as _fastpath
from wsplugin.delivery.asgi_writer import ASGIWriter
from wsplugin.delivery.writer import Compression, FastPath, FrameWriter, WriterOwner
from wsplugin.types import ASGISend

logger = logging.getLogger("wsplugin")

_logged: set[str] = set()


def _log_once(level: int, message: str, *args: Any) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        logger.log(level, "wsplugin: %s", text)


def choose_writer(
    owner: WriterOwner, send: ASGISend, scope: Any, fast_path: FastPath,
    compression: Compression = "auto",
) -> FrameWriter:
    """The writer of a connection that was just accepted (see the module docstring).

    ``scope`` is the connection's ASGI scope (``None``: no fast path); the server's own
    ``send``, captured outermost by :func:`wsplugin.delivery.uvicorn_writer.capture_server_send`, is
    read from it.
    """
    if fast_path is False or scope is None:
        if fast_path is False:
            _log_once(logging.INFO, "websocket writes use the ASGI send (fast_path=False)")
        return ASGIWriter(owner, send)
    writer, reason = _fastpath.uvicorn_writer(owner, send, scope, compression)
    if writer is not None:
        _log_once(logging.INFO, "websocket writes use the uvicorn %s fast path",
                  writer.flavour.name)
        return writer
    if reason:
        level = logging.WARNING if reason is _fastpath.WRAPPED else logging.INFO
        _log_once(level, "websocket writes use the ASGI send: %s", reason)
    return ASGIWriter(owner, send, _fastpath.server_send(scope))
