"""Tokens appear nowhere: not in uvicorn's access log or any other log line, the dashboard,
its API and events, error frames or close reasons, whether they came in a header, a
``connect`` frame or a ``refresh``. A token put in the URL is refused (HTTP 403); its
access log line shows it, which is the reason URLs are refused: to teach clients.

The server logs at INFO, where uvicorn's access log is (and production runs): at DEBUG,
uvicorn's websocket library logs every handshake header and frame (see docs/auth.md)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.admin_helpers import ADMIN, OPERATOR, create_app
from tests.jwt_helpers import (
    claims,
    connect_with,
    connect_with_header,
    rs_auth,
    rs_token,
)
from tests.support import ThreadServer
from tests.ws_helpers import recv_json, send_json, uvicorn_ws  # noqa: F401  (a fixture)


class Everything(logging.Handler):
    """Every record of every logger, formatted as a log file would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


SERVER_LOGGERS = ("uvicorn", "uvicorn.access", "wsplugin", "admin_ui", "fastapi", "starlette",
                  "asyncio")
"""Every logger of the server side (``uvicorn.error`` reaches ``uvicorn``); the test's own
clients log what they send, so they are not listened to."""


@contextlib.contextmanager
def captured() -> Iterator[Everything]:
    """Every server-side record at DEBUG and above (after uvicorn configured its logging)."""
    handler = Everything()
    loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


async def test_tokens_are_in_no_log_dashboard_event_frame_or_close_reason(
    uvicorn_ws: str,  # noqa: F811
) -> None:
    app = create_app(authenticate=rs_auth())
    server = ThreadServer(app, ws=uvicorn_ws, log_level="info", access_log=True)
    secret = {
        "header": rs_token(claims("ann", marker="header")),
        "frame": rs_token(claims("bob", marker="frame")),
        "expired": rs_token(claims("bob", ttl=-60)),
        "bad header": rs_token(claims("eve"), key="other"),
        "refresh": rs_token(claims("bob", marker="refresh")),
        "other sub": rs_token(claims("mallory")),
    }
    seen: list[str] = []  # every frame and close reason a client got
    with captured() as logged, server:
        header_ws, welcome = await connect_with_header(server, "lobby", secret["header"])
        seen.append(repr(welcome))
        frame_ws, welcome = await connect_with(server, "lobby", secret["frame"])
        seen.append(repr(welcome))
        for name, how in (("expired", connect_with), ("bad header", connect_with_header)):
            _, closed = await how(server, "lobby", secret[name])
            assert closed["closed"] == 4001
            seen.append(repr(closed))
        await send_json(frame_ws, {"type": "refresh", "token": secret["refresh"]})
        await send_json(frame_ws, {"type": "refresh", "token": secret["other sub"]})
        await send_json(frame_ws, {"type": "connect", "token": secret["refresh"]})
        for _ in range(3):
            seen.append(repr(await recv_json(frame_ws)))
        url_token = rs_token(claims("carol"))
        with pytest.raises(InvalidStatus):
            await connect(f"{server.ws_url}/ws/lobby?token={url_token}")
        async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR) as http:
            pages = [await http.get(f"{ADMIN}/api/connections"),
                     await http.get(f"{ADMIN}/api/events"),
                     await http.get(f"{ADMIN}/api/overview"),
                     await http.get(f"{ADMIN}/")]
        assert all(page.status_code == 200 for page in pages)
        listing = pages[0].json()["items"]
        assert sorted(item["user"] for item in listing) == ["ann", "bob"]
        assert all(isinstance(item["expires_at"], float) for item in listing)
        await header_ws.close()
        await frame_ws.close()
    logs = "\n".join(logged.lines)
    assert '"WebSocket /ws/lobby" [accepted]' in logs  # the access log was captured
    assert url_token in logs  # a URL is logged whole: why tokens never go in one
    places = {"logs": logs, "frames": "\n".join(seen),
              **{f"admin {i}": page.text for i, page in enumerate(pages)}}
    for name, token in secret.items():
        for place, text in places.items():
            assert token not in text, f"the {name} token is in the {place}"
            signature = token.rsplit(".", 1)[-1]
            assert signature not in text, f"the {name} token's signature is in the {place}"
