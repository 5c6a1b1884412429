"""The Origin check that stops cross-site WebSocket hijacking.

Browsers always send ``Origin`` on a websocket handshake and a page cannot forge it, so a
handshake whose origin is neither the server's own host nor explicitly allowed is refused
(HTTP 403) before accept. Non-browser clients send no ``Origin`` and are allowed.

Behind a reverse proxy that rewrites ``Host``, the browser's host arrives in
``X-Forwarded-Host`` (and the scheme it used in ``X-Forwarded-Proto``) or in the standard
``Forwarded: host=...;proto=...``. Those headers are believed only when the direct peer is
a trusted proxy (``forwarded_allow_ips``, like uvicorn's ``--forwarded-allow-ips``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

from wsplugin.delivery.uvicorn_writer import RAW_SEND_KEY

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_SECURE = {"http": False, "ws": False, "https": True, "wss": True}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose forwarded headers are believed: IPs, CIDR networks, or ``*``."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.everyone = "*" in entries
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(e) for e in entries if e != "*")

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:  # no peer (a unix socket) or not an IP
            return False
        return any(address in network for network in self.networks)


def direct_peer(scope: Scope) -> str | None:
    """The host of the TCP peer that sent the handshake.

    uvicorn's own proxy-headers middleware (on by default) replaces ``scope["client"]``
    with the ``X-Forwarded-For`` address when it trusts the peer, so the address of the
    socket is read from the server's protocol object when it is reachable.
    """
    protocol = getattr(scope.get(RAW_SEND_KEY), "__self__", None)
    client = getattr(protocol, "client", None) or scope.get("client")
    if isinstance(client, tuple | list) and client:
        return str(client[0])
    return None


def _last_value(values: list[str]) -> str | None:
    """The value the nearest proxy added: the last of a comma-separated header."""
    items = [v.strip() for v in ",".join(values).split(",") if v.strip()]
    return items[-1] if items else None


def _forwarded_pairs(values: list[str]) -> dict[str, str]:
    """``host`` and ``proto`` of the last element of RFC 7239 ``Forwarded`` headers."""
    element = _last_value(values)
    pairs: dict[str, str] = {}
    for pair in (element or "").split(";"):
        name, _, value = pair.partition("=")
        pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def forwarded_host_proto(headers: Headers) -> tuple[str | None, str | None]:
    """The browser's host and scheme as a proxy reports them (``X-Forwarded-*`` first)."""
    host = _last_value(headers.getlist("x-forwarded-host"))
    proto = _last_value(headers.getlist("x-forwarded-proto"))
    if host is None or proto is None:
        pairs = _forwarded_pairs(headers.getlist("forwarded"))
        host = host or pairs.get("host") or None
        proto = proto or pairs.get("proto") or None
    proto = proto.lower() if proto is not None and proto.lower() in _SECURE else None
    return host, proto


def _host_port(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return host


def _public_host(
    scope: Scope, headers: Headers, trusted: TrustedProxies | None
) -> tuple[str, str | None]:
    """The host the browser connected to, and its scheme if a trusted proxy said so."""
    host = headers.get("host", "")
    if trusted is None or direct_peer(scope) not in trusted:
        return host, None
    forwarded_host, proto = forwarded_host_proto(headers)
    return forwarded_host or host, proto


def origin_allowed(
    scope: Scope, allowed: Sequence[str] | None, trusted: TrustedProxies | None = None
) -> bool:
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None:
        return True
    normalised = origin.strip().rstrip("/").lower()
    if allowed and ("*" in allowed or normalised in allowed):
        return True
    parts = urlsplit(normalised)
    if not parts.scheme or not parts.netloc:
        return False
    host, proto = _public_host(scope, headers, trusted)
    if proto is not None and _SECURE.get(parts.scheme) is not _SECURE[proto]:
        return False  # an http:// page for a server the proxy serves over TLS, or back
    scheme = proto or parts.scheme
    return _host_port(parts.netloc, parts.scheme) == _host_port(host, scheme)
