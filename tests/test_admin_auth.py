"""Auth, roles, CSRF and security headers of the admin dashboard (in-process, httpx)."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException
from starlette.applications import Starlette

from admin_ui import AdminAuth, mount_admin
from admin_ui.auth import principal_from_user
from tests.admin_helpers import (
    ADMIN,
    OPERATOR,
    OPERATOR_TOKEN,
    PASSWORD,
    USER,
    VIEWER,
    VIEWER_TOKEN,
    create_app,
    login,
    manager_of,
)
from wsplugin import WebSocketManager

BROADCAST = f"{ADMIN}/api/broadcast"
BODY = {"room": "lobby", "data": "hello"}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app()) as http:
        yield http


@pytest.mark.parametrize(
    "path", ["/api/connections", "/api/rooms", "/api/overview", "/api/events", "/api/audit",
             "/api/stream", "/api/me", "/api/rooms/lobby"],
)
async def test_reads_need_credentials(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(ADMIN + path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_actions_need_credentials(client: httpx.AsyncClient) -> None:
    for action in ("broadcast", "send", "kick"):
        response = await client.post(f"{ADMIN}/api/{action}", json={"connection_id": "x"})
        assert response.status_code == 401


async def test_wrong_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ADMIN}/api/overview", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401


async def test_page_redirects_to_login_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ADMIN}/")
    assert response.status_code == 303
    assert response.headers["location"] == f"{ADMIN}/login"
    form = await client.get(f"{ADMIN}/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text and 'name="password"' in form.text


async def test_bare_path_redirects_to_slash(client: httpx.AsyncClient) -> None:
    response = await client.get(ADMIN)
    assert response.status_code == 307
    assert response.headers["location"] == f"{ADMIN}/"


async def test_viewer_sees_but_cannot_act(client: httpx.AsyncClient) -> None:
    me = await client.get(f"{ADMIN}/api/me", headers=VIEWER)
    assert me.json()["role"] == "viewer"
    assert (await client.get(f"{ADMIN}/api/connections", headers=VIEWER)).status_code == 200
    for action, body in [("broadcast", BODY), ("send", {"connection_id": "x", "data": 1}),
                         ("kick", {"connection_id": "x"})]:
        response = await client.post(f"{ADMIN}/api/{action}", json=body, headers=VIEWER)
        assert response.status_code == 403, action
    viewer_session = await login(client, VIEWER_TOKEN)
    response = await client.post(BROADCAST, json=BODY, headers={"X-CSRF-Token": viewer_session})
    assert response.status_code == 403


async def test_operator_bearer_acts_without_csrf(client: httpx.AsyncClient) -> None:
    response = await client.post(BROADCAST, json=BODY, headers=OPERATOR)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "delivered": 0}


async def test_basic_auth_for_scripts(client: httpx.AsyncClient) -> None:
    pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    response = await client.post(BROADCAST, json=BODY, headers={"Authorization": f"Basic {pair}"})
    assert response.status_code == 200
    wrong = base64.b64encode(f"{USER}:nope".encode()).decode()
    response = await client.get(f"{ADMIN}/api/me", headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401


async def test_session_cookie_flags(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{ADMIN}/login", data={"token": OPERATOR_TOKEN})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and f"path={ADMIN}" in cookie
    assert OPERATOR_TOKEN not in response.headers["set-cookie"]


async def test_session_post_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    csrf = await login(client)
    assert (await client.post(BROADCAST, json=BODY)).status_code == 403
    wrong = await client.post(BROADCAST, json=BODY, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == "missing or wrong CSRF token"
    right = await client.post(BROADCAST, json=BODY, headers={"X-CSRF-Token": csrf})
    assert right.status_code == 200


async def test_bearer_with_cookies_still_needs_csrf(client: httpx.AsyncClient) -> None:
    await login(client)
    response = await client.post(BROADCAST, json=BODY, headers=OPERATOR)
    assert response.status_code == 403


async def test_cross_site_form_post_fails(client: httpx.AsyncClient) -> None:
    csrf = await login(client)
    # What a form on another site sends: the cookie (if the browser sent it), no CSRF header.
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    form = await client.post(BROADCAST, data={"room": "lobby", "data": "x"}, headers=evil)
    assert form.status_code == 403
    # Even with a valid token (a leaked one), the browser's cross-site markers are refused.
    leaked = await client.post(
        BROADCAST, json=BODY,
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
    )
    assert leaked.status_code == 403
    other = await client.post(
        BROADCAST, json=BODY, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert other.status_code == 403
    same = await client.post(
        BROADCAST, json=BODY, headers={"X-CSRF-Token": csrf, "Origin": "http://test",
                                       "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 200


async def test_cross_site_login_post_fails(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{ADMIN}/login", data={"token": OPERATOR_TOKEN},
                                 headers={"Origin": "https://evil.example"})
    assert response.status_code == 403


async def test_login_form_with_password_and_token(client: httpx.AsyncClient) -> None:
    bad = await client.post(f"{ADMIN}/login", data={"username": USER, "password": "x"})
    assert bad.status_code == 401 and "Wrong credentials" in bad.text
    good = await client.post(f"{ADMIN}/login", data={"username": USER, "password": PASSWORD})
    assert good.status_code == 303
    me = await client.get(f"{ADMIN}/api/me")
    assert me.json()["name"] == USER and me.json()["role"] == "operator"
    bad_token = await client.post(f"{ADMIN}/login", data={"token": "nope"})
    assert bad_token.status_code == 401 and "Wrong credentials" in bad_token.text


async def test_logout_clears_the_session(client: httpx.AsyncClient) -> None:
    await login(client)
    response = await client.post(f"{ADMIN}/logout")
    assert response.status_code == 303
    assert (await client.get(f"{ADMIN}/api/me")).status_code == 401


async def test_forged_session_cookie_is_refused(client: httpx.AsyncClient) -> None:
    await login(client, VIEWER_TOKEN)
    cookie = client.cookies.get("wsadmin_session")
    assert cookie is not None
    payload, _, signature = cookie.partition(".")
    raw = base64.urlsafe_b64decode(payload + "==").replace(b'"viewer"', b'"operator"')
    forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature
    client.cookies.set("wsadmin_session", forged, path=ADMIN)
    assert (await client.get(f"{ADMIN}/api/me")).status_code == 401


async def test_security_headers_on_pages_and_api(client: httpx.AsyncClient) -> None:
    await login(client)
    for path in ("/", "/login", "/api/overview", "/static/admin.js"):
        response = await client.get(ADMIN + path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_page_has_no_inline_script(client: httpx.AsyncClient) -> None:
    await login(client)
    page = (await client.get(f"{ADMIN}/")).text
    assert "<script src=" in page
    assert "<script>" not in page and "onclick" not in page.lower()
    assert (await client.get(f"{ADMIN}/static/nothing.js")).status_code == 404


async def test_openapi_lists_the_admin_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in ("connections", "rooms", "rooms/{room}", "events", "audit", "stream", "me",
                 "overview"):
        assert "get" in paths[f"{ADMIN}/api/{path}"], path
    for action in ("broadcast", "send", "kick"):
        assert "post" in paths[f"{ADMIN}/api/{action}"], action
    assert f"{ADMIN}/" not in paths and f"{ADMIN}/login" not in paths
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_generated_token_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WSPLUGIN_ADMIN_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="wsplugin.admin"):
        app = create_app(admin_auth=None)
    token = app.state.wsplugin_admin.generated_token
    assert token
    lines = [r.getMessage() for r in caplog.records if token in r.getMessage()]
    assert len(lines) == 1 and f"{ADMIN}/login#token={token}" in lines[0]
    async with client_for(app) as http:
        assert (await http.get(f"{ADMIN}/api/me")).status_code == 401
        ok = await http.get(f"{ADMIN}/api/me", headers={"Authorization": f"Bearer {token}"})
        assert ok.json()["role"] == "operator"


async def test_env_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSPLUGIN_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("WSPLUGIN_ADMIN_VIEWER_TOKEN", "viewer-env")
    app = create_app(admin_auth=None)
    assert app.state.wsplugin_admin.generated_token is None
    async with client_for(app) as http:
        op = await http.get(f"{ADMIN}/api/me", headers={"Authorization": "Bearer from-env"})
        view = await http.get(f"{ADMIN}/api/me", headers={"Authorization": "Bearer viewer-env"})
        assert (op.json()["role"], view.json()["role"]) == ("operator", "viewer")


async def test_token_string_and_pair() -> None:
    async with client_for(create_app(admin_auth="just-a-token")) as http:
        bearer = {"Authorization": "Bearer just-a-token"}
        response = await http.get(f"{ADMIN}/api/me", headers=bearer)
        assert response.json()["role"] == "operator"
    async with client_for(create_app(admin_auth=("bob", "secret"))) as http:
        pair = base64.b64encode(b"bob:secret").decode()
        response = await http.get(f"{ADMIN}/api/me", headers={"Authorization": f"Basic {pair}"})
        assert (response.json()["name"], response.json()["role"]) == ("bob", "operator")


async def test_auth_false_is_open_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wsplugin.admin"):
        app = create_app(admin_auth=False)
    assert any("DISABLED" in r.getMessage() for r in caplog.records)
    async with client_for(app) as http:
        page = await http.get(f"{ADMIN}/")
        assert page.status_code == 200
        # Still no cross-site actions: the page's CSRF token is required.
        assert (await http.post(BROADCAST, json=BODY)).status_code == 403
        csrf = page.text.split('data-csrf="')[1].split('"')[0]
        ok = await http.post(BROADCAST, json=BODY, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200


def users_dependency(x_user: str | None = Header(None)) -> dict[str, str]:
    if x_user is None:
        raise HTTPException(401, "who are you?")
    return {"name": x_user, "role": "viewer" if x_user.startswith("view") else "operator"}


async def test_dependency_auth_with_roles() -> None:
    app = create_app(admin_auth=users_dependency)
    async with client_for(app) as http:
        assert (await http.get(f"{ADMIN}/api/me")).status_code == 401
        assert (await http.get(f"{ADMIN}/")).status_code == 401
        me = await http.get(f"{ADMIN}/api/me", headers={"X-User": "carol"})
        assert me.json()["name"] == "carol" and me.json()["role"] == "operator"
        viewer = await http.post(BROADCAST, json=BODY, headers={"X-User": "viewer1"})
        assert viewer.status_code == 403
        no_csrf = await http.post(BROADCAST, json=BODY, headers={"X-User": "carol"})
        assert no_csrf.status_code == 403
        csrf = me.json()["csrf_token"]
        headers = {"X-User": "carol", "X-CSRF-Token": csrf}
        ok = await http.post(BROADCAST, json=BODY, headers=headers)
        assert ok.status_code == 200
        audit = (await http.get(f"{ADMIN}/api/audit", headers={"X-User": "carol"})).json()
        assert audit[0]["actor"] == "carol" and audit[0]["action"] == "broadcast"


def test_principal_from_user_objects() -> None:
    class User:
        username = "dave"
        role = "viewer"

    assert principal_from_user(User()).name == "dave"
    assert principal_from_user(User()).role == "viewer"
    assert principal_from_user("eve").role == "operator"


def test_bad_credentials_are_refused_at_mount() -> None:
    with pytest.raises(ValueError):
        AdminAuth(operators=[""])
    with pytest.raises(ValueError):
        AdminAuth()
    with pytest.raises(ValueError):
        mount_admin(FastAPI(), WebSocketManager(), path="/", auth="x")


async def test_plain_starlette_app_gets_a_mounted_sub_app() -> None:
    app = Starlette()
    manager = WebSocketManager()
    mount_admin(app, manager, path="/ops/", auth=OPERATOR_TOKEN)
    async with client_for(app) as http:
        assert (await http.get("/ops/api/overview")).status_code == 401
        overview = await http.get("/ops/api/overview", headers=OPERATOR)
        assert overview.json()["node"] == manager.node_id
        assert (await http.get("/ops/")).headers["location"] == "/ops/login"


async def test_manager_is_the_installed_one() -> None:
    app = create_app()
    async with client_for(app) as http:
        response = await http.get(f"{ADMIN}/api/overview", headers=OPERATOR)
        assert response.json()["node"] == manager_of(app).node_id
