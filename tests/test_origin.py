"""The Origin check: same host or an allowed origin; no Origin header is a non-browser client."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.ws_helpers import open_client, serve
from wsplugin.origin import origin_allowed


def scope(host: str, origin: str | None) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers}


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("example.com", None),
        ("example.com", "https://example.com"),
        ("example.com", "https://EXAMPLE.com/"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("example.com:443", "https://example.com"),
        ("example.com", "https://example.com:443"),
        ("example.com:80", "http://example.com"),
    ],
)
def test_same_host_or_no_origin_is_allowed(host: str, origin: str | None) -> None:
    assert origin_allowed(scope(host, origin), None)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("example.com", "https://evil.example"),
        ("example.com", "https://example.com.evil.example"),
        ("example.com", "https://sub.example.com"),
        ("127.0.0.1:8000", "http://127.0.0.1:9000"),
        ("example.com", "null"),
        ("example.com", ""),
        ("example.com", "example.com"),
        ("example.com:8443", "https://example.com"),
    ],
)
def test_another_site_is_refused(host: str, origin: str) -> None:
    assert not origin_allowed(scope(host, origin), None)


def test_allowed_origins_list() -> None:
    allowed = ("https://app.example", "http://localhost:3000")
    assert origin_allowed(scope("api.example", "https://app.example"), allowed)
    assert origin_allowed(scope("api.example", "http://localhost:3000"), allowed)
    assert not origin_allowed(scope("api.example", "https://evil.example"), allowed)
    assert not origin_allowed(scope("api.example", "http://localhost:3001"), allowed)
    assert origin_allowed(scope("api.example", "https://api.example"), allowed)


def test_star_allows_every_origin() -> None:
    assert origin_allowed(scope("api.example", "https://anything.example"), ("*",))
    assert origin_allowed(scope("api.example", "null"), ("*",))


async def test_handshake_from_another_site_is_403() -> None:
    with serve() as (server, manager):
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{server.ws_url}/ws/lobby", origin=Origin("https://evil.example"))
        assert info.value.response.status_code == 403
        assert manager.local_connections() == []


async def test_handshake_from_the_same_host_is_accepted() -> None:
    with serve() as (server, _):
        origin = Origin(f"http://127.0.0.1:{server.port}")
        ws, _ = await open_client(server, "lobby", origin=origin)
        await ws.close()


async def test_handshake_without_origin_is_accepted() -> None:
    with serve(allowed_origins=["https://app.example"]) as (server, _):
        ws, _ = await open_client(server, "lobby")
        await ws.close()


async def test_allowed_origins_at_the_handshake() -> None:
    with serve(allowed_origins=["https://app.example"]) as (server, _):
        ws, _ = await open_client(server, "lobby", origin=Origin("https://app.example"))
        await ws.close()
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{server.ws_url}/ws/lobby", origin=Origin("https://evil.example"))
        assert info.value.response.status_code == 403


async def test_star_at_the_handshake() -> None:
    with serve(allowed_origins=["*"]) as (server, _):
        ws, _ = await open_client(server, "lobby", origin=Origin("https://anywhere.example"))
        await ws.close()
