"""Keys, tokens and clients for the JWT tests: RSA keys made with ``cryptography`` here,
tokens signed with PyJWT (and by hand for the ones PyJWT refuses to make)."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import ThreadServer
from tests.ws_helpers import make_app, recv_json, send_json
from wsplugin import JWTAuth, WebSocketManager

HS_SECRET = "a-test-secret-of-at-least-32-bytes!!"
AUDIENCE = "wsplugin-tests"
ISSUER = "https://issuer.test"


@functools.cache
def rsa_key(name: str = "main") -> rsa.RSAPrivateKey:
    """An RSA private key per name, generated once per test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(name: str = "main") -> bytes:
    return rsa_key(name).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(sub: str | None = "ann", *, ttl: float | None = 60.0, **extra: Any) -> dict[str, Any]:
    """Claims of a valid token for the RS256 server (audience and issuer set)."""
    found: dict[str, Any] = {"aud": AUDIENCE, "iss": ISSUER, "iat": int(time.time())}
    if sub is not None:
        found["sub"] = sub
    if ttl is not None:
        found["exp"] = time.time() + ttl
    found.update(extra)
    return found


def rs_token(payload: dict[str, Any], key: str = "main", kid: str | None = None) -> str:
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(payload, rsa_key(key), algorithm="RS256", headers=headers)


def hs_token(payload: dict[str, Any], secret: str = HS_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any]) -> str:
    """``alg: none``: no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def confused_token(payload: dict[str, Any]) -> str:
    """HS256 with the server's RSA *public* key as the HMAC secret (PyJWT will not make it)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def rs_auth(**options: Any) -> JWTAuth:
    return JWTAuth(key=public_pem(), algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER,
                   **options)


@contextlib.contextmanager
def jwt_server(auth: JWTAuth | None = None,
               **options: Any) -> Iterator[tuple[ThreadServer, WebSocketManager]]:
    """A real uvicorn server whose managed endpoint takes RS256 tokens (by default)."""
    app, manager = make_app(authenticate=auth or rs_auth(), **options)
    with ThreadServer(app) as server:
        yield server, manager


async def connect_with(server: ThreadServer, room: str, token: str,
                       **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """Open ``/ws/{room}`` and send the ``connect`` frame; the client and its first frame
    (``welcome``, or ``{"closed": code, "reason": ...}``)."""
    ws = await connect(f"{server.ws_url}/ws/{room}", **kwargs)
    await send_json(ws, {"type": "connect", "token": token})
    return ws, await first_frame(ws)


async def connect_with_header(server: ThreadServer, room: str,
                              token: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(f"{server.ws_url}/ws/{room}",
                       additional_headers={"Authorization": f"Bearer {token}"})
    return ws, await first_frame(ws)


async def first_frame(ws: ClientConnection, seconds: float = 10.0) -> dict[str, Any]:
    """The next frame, or the close (its code and reason) if the server closes instead."""
    try:
        return await recv_json(ws, seconds)
    except ConnectionClosed:
        return {"closed": ws.close_code, "reason": ws.close_reason}


async def closed_with(ws: ClientConnection, seconds: float = 10.0) -> tuple[int | None, str]:
    """Read until the server closes; its code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await recv_json(ws, seconds)
    return ws.close_code, ws.close_reason or ""
