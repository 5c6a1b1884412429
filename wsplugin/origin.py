"""The Origin check that stops cross-site WebSocket hijacking.

Browsers always send ``Origin`` on a websocket handshake and a page cannot forge it, so a
handshake whose origin is neither the server's own host nor explicitly allowed is refused
(HTTP 403) before accept. Non-browser clients send no ``Origin`` and are allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_port(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return host


def origin_allowed(scope: Scope, allowed: tuple[str, ...] | None) -> bool:
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
    host = headers.get("host", "")
    return _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme)
