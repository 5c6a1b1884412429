"""How a connection ends when the server stops, whatever the server does on SIGTERM.

Two gaps in what ASGI servers do, closed here:

- hypercorn waits ``--graceful-timeout`` and then cancels the app's task; its own close is
  then 1011. :func:`going_away` sends 1001 ("reconnect elsewhere") from the cancelled task,
  and aborts the transport if even that cannot be written (hypercorn too waits for a
  transport to flush, forever).
- uvicorn closes a websocket's transport when the app returns, and waits (without a
  ``--timeout-graceful-shutdown``) until that transport has flushed: forever, for a peer that
  stopped reading. :func:`abandon_later` aborts the transport ``CLOSE_TIMEOUT`` seconds after
  the app returned, so shutdown ends in bounded time. A transport that closed in time is
  left alone (aborting a closed transport does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from wsplugin.delivery.connection import CLOSE_TIMEOUT
from wsplugin.delivery.uvicorn_writer import RAW_SEND_KEY
from wsplugin.protocol import CloseCode

if TYPE_CHECKING:
    from wsplugin.delivery.connection import Connection

logger = logging.getLogger("wsplugin")

CANCEL_CLOSE_TIMEOUT = 1.0
"""Seconds a cancelled connection's 1001 may take to be written before it is given up."""


async def going_away(conn: Connection, scope: Scope) -> None:
    """The serving task was cancelled (server shutdown): close with 1001 if still open.

    A close that cannot be written within ``CANCEL_CLOSE_TIMEOUT`` (a peer that stopped
    reading) aborts the transport: the server would otherwise wait for it to flush forever.
    Called from ``except CancelledError`` before re-raising; the caller stays cancelled.
    """
    if conn.closed:
        return
    try:
        async with asyncio.timeout(CANCEL_CLOSE_TIMEOUT):
            await conn.aclose(CloseCode.GOING_AWAY, "server shutting down")
    except (Exception, asyncio.CancelledError) as exc:  # cancelled again, stuck, or gone
        logger.debug("wsplugin: 1001 on cancel not sent to %s: %r", conn.id, exc)
        transport = server_transport(scope)
        if transport is not None:
            _abort(transport)
    finally:
        if not conn.closed:
            conn.disconnected(1006)


def server_transport(scope: Scope) -> Any:
    """The asyncio transport under this websocket, or ``None`` where it cannot be reached.

    uvicorn's protocol has it as ``transport``; hypercorn's websocket stream sends through
    its HTTP protocol to a ``TCPServer`` that has it as ``writer.transport``: follow the
    ``send`` callables a few hops. granian and daphne expose none.
    """
    owner = getattr(scope.get(RAW_SEND_KEY), "__self__", None)
    for _ in range(4):
        if owner is None:
            return None
        transport = getattr(owner, "transport", None)
        if transport is None:
            transport = getattr(getattr(owner, "writer", None), "transport", None)
        if callable(getattr(transport, "abort", None)):
            return transport
        owner = getattr(getattr(owner, "send", None), "__self__", None)
    return None


def abandon_later(scope: Scope, delay: float = CLOSE_TIMEOUT) -> None:
    """Abort the connection's transport in ``delay`` seconds unless it is gone by then.

    Nothing to do for a transport with nothing left to write (the usual end: its close
    completes at once), so most connections schedule no timer."""
    transport = server_transport(scope)
    if transport is None or not _pending_writes(transport):
        return
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
        asyncio.get_running_loop().call_later(delay, _abort, transport)


def _pending_writes(transport: Any) -> bool:
    """Whether the transport still holds bytes to write (True when it cannot say)."""
    try:
        return bool(transport.get_write_buffer_size())
    except Exception:  # a transport of another kind: assume the worst
        return True


def _abort(transport: Any) -> None:
    try:
        transport.abort()
    except Exception as exc:  # a transport of another kind: leave it to the server
        logger.debug("wsplugin: abort of a stuck transport failed: %r", exc)
