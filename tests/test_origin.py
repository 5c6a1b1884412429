"""The Origin check: same host or an allowed origin; no Origin header is a non-browser client."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.ws_helpers import open_client, serve
from wsplugin.endpoint.origin import TrustedProxies, origin_allowed


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


# ------------------------------------------------------- forwarded headers from proxies
def proxied(origin: str, peer: str = "127.0.0.1", host: str = "backend:8000",
            **forwarded: str) -> dict[str, Any]:
    """A handshake scope as a proxy sends it: its own ``Host``, the browser's elsewhere."""
    s = scope(host, origin)
    s["client"] = (peer, 51000)
    s["headers"] += [(k.replace("_", "-").lower().encode(), v.encode())
                     for k, v in forwarded.items()]
    return s


LOCAL = TrustedProxies(["127.0.0.1"])


def test_forwarded_host_from_a_trusted_proxy_is_the_host() -> None:
    assert not origin_allowed(proxied("https://app.example"), None, LOCAL)
    assert origin_allowed(proxied("https://app.example", X_Forwarded_Host="app.example"),
                          None, LOCAL)
    assert not origin_allowed(proxied("https://evil.example", X_Forwarded_Host="app.example"),
                              None, LOCAL)


def test_forwarded_host_from_an_untrusted_peer_is_ignored() -> None:
    s = proxied("https://app.example", peer="203.0.113.9", X_Forwarded_Host="app.example")
    assert not origin_allowed(s, None, LOCAL)
    assert not origin_allowed(proxied("https://app.example", X_Forwarded_Host="app.example"),
                              None, None)


@pytest.mark.parametrize(
    ("origin", "proto", "allowed"),
    [("https://app.example", "https", True), ("http://app.example", "https", False),
     ("http://app.example", "http", True), ("https://app.example", "http", False),
     ("https://app.example", "wss", True), ("https://app.example", "gopher", True)],
)
def test_forwarded_proto_must_match_the_origin_scheme(
    origin: str, proto: str, allowed: bool
) -> None:
    s = proxied(origin, X_Forwarded_Host="app.example", X_Forwarded_Proto=proto)
    assert origin_allowed(s, None, LOCAL) is allowed


def test_default_port_of_the_forwarded_scheme() -> None:
    s = proxied("https://app.example", X_Forwarded_Host="app.example:443",
                X_Forwarded_Proto="https")
    assert origin_allowed(s, None, LOCAL)
    s = proxied("https://app.example", X_Forwarded_Host="app.example:8443",
                X_Forwarded_Proto="https")
    assert not origin_allowed(s, None, LOCAL)


def test_the_nearest_proxy_value_wins() -> None:
    s = proxied("https://app.example", X_Forwarded_Host="evil.example, app.example")
    assert origin_allowed(s, None, LOCAL)
    s = proxied("https://evil.example", X_Forwarded_Host="evil.example, app.example")
    assert not origin_allowed(s, None, LOCAL)


@pytest.mark.parametrize(
    "header",
    ['for=198.51.100.1;host=app.example;proto=https',
     'for="[2001:db8::1]:4711";proto=https;host="app.example"',
     'host=evil.example, for=198.51.100.1;host=app.example'],
)
def test_standard_forwarded_header(header: str) -> None:
    assert origin_allowed(proxied("https://app.example", Forwarded=header), None, LOCAL)
    assert not origin_allowed(proxied("https://app.example", peer="198.51.100.7",
                                      Forwarded=header), None, LOCAL)


def test_forwarded_proto_refuses_http_pages() -> None:
    s = proxied("http://app.example", Forwarded="host=app.example;proto=https")
    assert not origin_allowed(s, None, LOCAL)


@pytest.mark.parametrize(
    ("entries", "peer", "trusted"),
    [(["10.0.0.0/8"], "10.1.2.3", True), (["10.0.0.0/8"], "11.0.0.1", False),
     (["192.168.1.5", "::1"], "::1", True), (["fd00::/8"], "fd12::1", True),
     (["*"], "203.0.113.9", True), (["127.0.0.1"], "not-an-ip", False),
     (["127.0.0.1"], None, False)],
)
def test_trusted_proxies(entries: list[str], peer: str | None, trusted: bool) -> None:
    assert (peer in TrustedProxies(entries)) is trusted


# ------------------------------------------------------ forwarded headers at the handshake
PROXY_HEADERS = {"X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https"}


async def handshake_status(server_url: str, headers: dict[str, str]) -> int:
    """101 if the handshake with ``Origin: https://app.example`` was accepted, else the code."""
    try:
        ws = await connect(f"{server_url}/ws/lobby", origin=Origin("https://app.example"),
                           additional_headers=headers)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


@pytest.mark.parametrize(
    ("options", "status"),
    [({}, 101), ({"forwarded_allow_ips": ["10.0.0.0/8"]}, 403),
     ({"forwarded_allow_ips": "127.0.0.0/8"}, 101), ({"forwarded_allow_ips": ["*"]}, 101)],
    ids=["default_localhost", "untrusted_peer", "cidr", "star"],
)
async def test_forwarded_headers_at_a_real_handshake(options: dict[str, Any], status: int) -> None:
    with serve(**options) as (server, _):
        assert await handshake_status(server.ws_url, {}) == 403
        assert await handshake_status(server.ws_url, PROXY_HEADERS) == status


async def test_forwarded_for_rewritten_by_uvicorn_still_sees_the_proxy() -> None:
    """uvicorn's proxy headers put X-Forwarded-For in scope["client"]; the peer is the proxy."""
    headers = {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.7"}
    with serve() as (server, manager):
        assert await handshake_status(server.ws_url, headers) == 101
        ws = await connect(f"{server.ws_url}/ws/lobby", additional_headers=headers)
        await ws.recv()
        (info,) = manager.local_connections()
        assert info.remote.startswith("203.0.113.7")  # uvicorn did rewrite the client
        await ws.close()


async def test_http_page_behind_a_tls_proxy_is_refused() -> None:
    with serve() as (server, _):
        headers = {**PROXY_HEADERS}
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{server.ws_url}/ws/lobby", origin=Origin("http://app.example"),
                          additional_headers=headers)
        assert info.value.response.status_code == 403
