"""``authenticate=JWTAuth(...)`` at the handshake, on a real uvicorn server: HS256, RS256
and a JWKS served by the test app itself; the token in the ``connect`` frame or an
``Authorization`` header, never in the URL; every refusal closes 4001 with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.jwt_helpers import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    claims,
    confused_token,
    connect_with,
    connect_with_header,
    first_frame,
    hs_token,
    jwt_server,
    public_pem,
    rs_token,
    rsa_key,
    unsigned_token,
)
from tests.support import ROOT, ThreadServer
from tests.ws_helpers import errors_logged, on_server, recv_json, send_json
from wsplugin import JWTAuth, User, install_ws_manager


async def test_hs256_token_in_the_connect_frame() -> None:
    auth = JWTAuth(key=HS_SECRET, algorithms=["HS256"])
    with jwt_server(auth) as (server, manager):
        exp = time.time() + 120
        token = hs_token({"sub": "ann", "info": {"name": "Ann"}, "exp": exp})
        ws, welcome = await connect_with(server, "lobby", token)
        assert welcome["type"] == "welcome", welcome
        assert welcome["rooms"] == ["lobby"]
        assert 110 <= welcome["expires_in"] <= 120
        (info,) = await on_server(server, manager.connections())
        assert (info.id, info.user, info.info) == (welcome["connection_id"], "ann",
                                                   {"name": "Ann"})
        assert info.expires_at == pytest.approx(exp)
        await send_json(ws, {"type": "ping", "id": 1})
        assert await recv_json(ws) == {"type": "pong", "id": 1}
        await ws.close()


async def test_rs256_token_in_an_authorization_header_gets_the_welcome_at_once() -> None:
    with jwt_server() as (server, manager):
        ws, welcome = await connect_with_header(server, "lobby", rs_token(claims("bob")))
        assert welcome["type"] == "welcome", welcome
        assert "expires_in" in welcome
        assert [i.user for i in await on_server(server, manager.connections())] == ["bob"]
        await ws.close()


async def test_a_token_without_exp_has_no_expiry() -> None:
    with jwt_server() as (server, manager):
        ws, welcome = await connect_with(server, "lobby", rs_token(claims(ttl=None)))
        assert welcome["type"] == "welcome" and "expires_in" not in welcome
        (info,) = await on_server(server, manager.connections())
        assert info.expires_at is None
        await ws.close()


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (lambda: rs_token(claims(ttl=-30)), "token expired"),
    "wrong signature": (lambda: rs_token(claims(), key="other"), "bad signature"),
    "wrong audience": (lambda: rs_token(claims(aud="someone-else")), "bad audience"),
    "no audience": (lambda: rs_token({k: v for k, v in claims().items() if k != "aud"}),
                    "bad audience"),
    "wrong issuer": (lambda: rs_token(claims(iss="https://evil.test")), "bad issuer"),
    "alg none": (lambda: unsigned_token(claims()), "bad signature"),
    "HS256 signed with the RSA public key": (lambda: confused_token(claims()), "bad signature"),
    "missing sub": (lambda: rs_token(claims(sub=None)), "missing sub"),
    "not a JWT": (lambda: "not.a.jwt", "bad token"),
    "bad rooms claim": (lambda: rs_token(claims(rooms="chat-*")), "bad token"),
    "info not an object": (lambda: rs_token(claims(info=[1, 2])), "bad token"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_every_bad_token_closes_4001_with_its_reason(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason = REFUSED[case]
    token = make()
    with jwt_server() as (server, manager), errors_logged(caplog) as errors:
        _, in_frame = await connect_with(server, "lobby", token)
        _, in_header = await connect_with_header(server, "lobby", token)
        assert in_frame == {"closed": 4001, "reason": reason}
        assert in_header == {"closed": 4001, "reason": reason}
        assert await on_server(server, manager.connections()) == []
    assert errors == []
    assert manager.tally.refused["auth"] == 2
    assert token not in caplog.text


async def test_no_connect_frame_within_auth_timeout_closes_4001_no_token() -> None:
    with jwt_server(auth_timeout=0.3) as (server, manager):
        silent = await connect(f"{server.ws_url}/ws/lobby")
        assert await first_frame(silent) == {"closed": 4001, "reason": "no token"}
        other = await connect(f"{server.ws_url}/ws/lobby")  # anything but connect, first
        await send_json(other, {"type": "ping"})
        assert await first_frame(other) == {"closed": 4001, "reason": "no token"}
        binary = await connect(f"{server.ws_url}/ws/lobby")
        await binary.send(b"\x00")
        assert await first_frame(binary) == {"closed": 4001, "reason": "no token"}
        no_field = await connect(f"{server.ws_url}/ws/lobby")
        await send_json(no_field, {"type": "connect"})
        assert await first_frame(no_field) == {"closed": 4001, "reason": "no token"}
        assert manager.tally.refused["auth"] == 4
        assert manager.tally.accepted == 0


async def test_a_token_in_the_url_is_refused() -> None:
    with jwt_server() as (server, manager):
        token = rs_token(claims())
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{server.ws_url}/ws/lobby?token={token}")
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):  # even beside a good header
            await connect(f"{server.ws_url}/ws/lobby?token=x",
                          additional_headers={"Authorization": f"Bearer {token}"})
        assert manager.tally.refused["auth"] == 2


async def test_rooms_claim_at_the_handshake_and_on_join() -> None:
    with jwt_server() as (server, _):
        token = rs_token(claims(rooms=["chat-*", "lobby"]))
        _, refused = await connect_with(server, "secret", token)
        assert refused == {"closed": 4003, "reason": "room not allowed"}
        with pytest.raises(InvalidStatus) as status:  # known before the accept: HTTP 403
            await connect(f"{server.ws_url}/ws/secret",
                          additional_headers={"Authorization": f"Bearer {token}"})
        assert status.value.response.status_code == 403
        ws, welcome = await connect_with(server, "chat-1", token)
        assert welcome["type"] == "welcome"
        await send_json(ws, {"type": "join", "room": "lobby", "id": 1})
        assert await recv_json(ws) == {"type": "joined", "room": "lobby", "id": 1}
        await send_json(ws, {"type": "join", "room": "secret", "id": 2})
        error = await recv_json(ws)
        assert (error["type"], error["code"], error["id"]) == ("error", "forbidden", 2)
        await ws.close()


async def test_authorize_applies_on_top_of_the_token() -> None:
    def authorize(identity: Any, room: str) -> bool:
        assert isinstance(identity, User)
        return room != "staff"

    with jwt_server(authorize=authorize) as (server, _):
        _, refused = await connect_with(server, "staff", rs_token(claims()))
        assert refused == {"closed": 4003, "reason": "room not allowed"}


async def test_max_connections_per_user_with_in_band_tokens_closes_4003() -> None:
    with jwt_server(max_connections_per_user=1) as (server, manager):
        token = rs_token(claims("ann"))
        first, welcome = await connect_with(server, "lobby", token)
        assert welcome["type"] == "welcome"
        _, second = await connect_with(server, "lobby", token)
        assert second == {"closed": 4003, "reason": "too many connections for this user"}
        with pytest.raises(InvalidStatus):  # a header token: refused before the accept
            await connect_with_header(server, "lobby", token)
        assert manager.tally.refused["user_limit"] == 2
        await first.close()


def jwks_app(public: dict[str, Any]) -> tuple[FastAPI, list[int]]:
    """An app serving its own JSON Web Key Set at /jwks.json (fetches counted)."""
    app = FastAPI()
    fetches: list[int] = []

    @app.get("/jwks.json")
    def jwks() -> dict[str, Any]:
        fetches.append(1)
        return public

    return app, fetches


def jwk(name: str, kid: str) -> dict[str, Any]:
    key = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key(name).public_key(), as_dict=True)
    return {**key, "kid": kid, "use": "sig", "alg": "RS256"}


async def test_a_key_set_served_by_the_app_itself() -> None:
    keys: dict[str, Any] = {"keys": [jwk("main", "k1")]}
    app, fetches = jwks_app(keys)
    server = ThreadServer(app)
    auth = JWTAuth(jwks_url=f"{server.url}/jwks.json", algorithms=["RS256"],
                   audience=AUDIENCE, issuer=ISSUER, jwks_min_refresh=0)
    install_ws_manager(app, authenticate=auth, admin_path=None)
    with server:
        ws, welcome = await connect_with(server, "lobby", rs_token(claims(), kid="k1"))
        assert welcome["type"] == "welcome", welcome
        ws2, welcome = await connect_with_header(server, "lobby", rs_token(claims(), kid="k1"))
        assert welcome["type"] == "welcome", welcome
        assert len(fetches) == 1  # cached
        _, refused = await connect_with(server, "lobby", rs_token(claims(), "other", kid="k1"))
        assert refused == {"closed": 4001, "reason": "bad signature"}
        keys["keys"].append(jwk("other", "k2"))  # the provider rotates its keys
        ws3, welcome = await connect_with(server, "lobby", rs_token(claims(), "other", kid="k2"))
        assert welcome["type"] == "welcome", welcome  # an unknown kid fetched the set again
        assert len(fetches) == 2
        for socket in (ws, ws2, ws3):
            await socket.close()


async def test_unknown_kids_fetch_the_key_set_at_most_once_per_min_refresh() -> None:
    app, fetches = jwks_app({"keys": [jwk("main", "k1")]})
    server = ThreadServer(app)
    auth = JWTAuth(jwks_url=f"{server.url}/jwks.json", algorithms=["RS256"],
                   audience=AUDIENCE, issuer=ISSUER, jwks_min_refresh=3600)
    install_ws_manager(app, authenticate=auth, admin_path=None)
    with server:
        for kid in ("made-up-1", "made-up-2", "made-up-3"):
            _, refused = await connect_with(server, "lobby", rs_token(claims(), kid=kid))
            assert refused == {"closed": 4001, "reason": "bad signature"}
        assert len(fetches) == 1


def test_algorithms_are_required_and_the_key_must_fit_them() -> None:
    with pytest.raises(TypeError):
        JWTAuth(key=HS_SECRET)  # type: ignore[call-arg]
    for algorithms in ([], ["none"], ["NONE"], "HS256", ["HS257"]):
        with pytest.raises(ValueError, match="JWTAuth"):
            JWTAuth(key=HS_SECRET, algorithms=algorithms)
    with pytest.raises(ValueError, match="does not fit algorithm HS256"):
        JWTAuth(key=public_pem(), algorithms=["HS256"])  # the confusion, refused at start
    with pytest.raises(ValueError, match="does not fit algorithm HS256"):
        JWTAuth(key=public_pem(), algorithms=["RS256", "HS256"])
    with pytest.raises(ValueError, match="does not fit algorithm RS256"):
        JWTAuth(key=HS_SECRET, algorithms=["RS256"])
    with pytest.raises(ValueError, match="exactly one of"):
        JWTAuth(algorithms=["RS256"])
    auth = JWTAuth(key=HS_SECRET, algorithms=["HS256"])
    assert HS_SECRET not in repr(auth)


def test_without_pyjwt_wsplugin_imports_and_jwtauth_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['jwt'] = None\n"
        "import wsplugin\n"
        "try:\n"
        "    wsplugin.JWTAuth(key='x' * 32, algorithms=['HS256'])\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    assert "pip install 'wsplugin[jwt]'" in out.stdout
