"""Users in the admin JSON API: the ``user`` filter, the user and info of each connection,
and "kick user" (CSRF-protected like every action, audited), on a real server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.websockets import WebSocket

from tests.admin_helpers import ADMIN, OPERATOR, VIEWER, XSS, create_app, login, open_client
from tests.support import ThreadServer
from tests.ws_helpers import close_code
from wsplugin import User

KICK_USER = f"{ADMIN}/api/kick-user"


def authenticate(websocket: WebSocket) -> Any:
    """``?user=`` (its info: ``?info=`` as JSON, else ``?name=``); without it, an identity
    that is no user."""
    query = websocket.query_params
    user = query.get("user")
    if not user:
        return {"role": "guest"}
    if "info" in query:
        return User(user, json.loads(query["info"]))
    return User(user, {"name": query.get("name", user.title())})


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    with ThreadServer(create_app(authenticate=authenticate)) as running:
        yield running


@pytest.fixture
async def http(server: ThreadServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=10) as client:
        yield client


async def connections(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get(f"{ADMIN}/api/connections", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_connections_filter_by_user_and_show_user_and_info(
    server: ThreadServer, http: httpx.AsyncClient
) -> None:
    a1, a1_id = await open_client(server.ws_url, "red?user=alice&name=Alice")
    a2, a2_id = await open_client(server.ws_url, "blue?user=alice&name=Alice")
    bob, bob_id = await open_client(server.ws_url, "red?user=bob")
    xss, xss_id = await open_client(server.ws_url, "red?user=mallory&name=" + quote(XSS))
    try:
        page = await connections(http, user="alice")
        assert page["total"] == 2
        assert {item["id"] for item in page["items"]} == {a1_id, a2_id}
        assert {(item["user"], str(item["info"])) for item in page["items"]} == {
            ("alice", "{'name': 'Alice'}")}
        assert (await connections(http, user="alice", room="red"))["total"] == 1
        assert (await connections(http, user="nobody"))["total"] == 0
        assert [i["id"] for i in (await connections(http, q="BOB"))["items"]] == [bob_id]
        (hostile,) = (await connections(http, user="mallory"))["items"]
        assert (hostile["id"], hostile["info"]) == (xss_id, {"name": XSS})  # data, as is
        assert (await http.get(f"{ADMIN}/api/connections", params={"user": ""})).status_code \
            == 422
        long = {"user": "u" * 257}
        assert (await http.get(f"{ADMIN}/api/connections", params=long)).status_code == 422
    finally:
        for ws in (a1, a2, bob, xss):
            await ws.close()


async def test_kick_user_closes_every_connection_of_the_user_and_is_audited(
    server: ThreadServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsplugin.audit")
    a1, _ = await open_client(server.ws_url, "red?user=alice")
    a2, _ = await open_client(server.ws_url, "blue?user=alice")
    bob, bob_id = await open_client(server.ws_url, "red?user=bob")
    try:
        response = await http.post(KICK_USER, json={"user_id": "alice", "reason": "spam"})
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": True, "kicked": 2}
        for ws in (a1, a2):
            assert await close_code(ws) == 4000
            assert ws.close_reason == "spam"
        nobody = await http.post(KICK_USER, json={"user_id": "nobody"})
        assert nobody.json() == {"ok": False, "kicked": 0}
        audit = (await http.get(f"{ADMIN}/api/audit")).json()
        assert [(a["action"], a["target"], a["detail"], a["result"]) for a in audit] == [
            ("kick_user", "nobody", "", "kicked 0"), ("kick_user", "alice", "spam", "kicked 2")]
        logged = [r.getMessage() for r in caplog.records if r.name == "wsplugin.audit"]
        assert len(logged) == 2 and "kick_user alice" in logged[0]
        assert [i["id"] for i in (await connections(http))["items"]] == [bob_id]
        for bad in ({"user_id": ""}, {"user_id": "u" * 257}, {"user_id": "a", "reason": "r" * 121},
                    {"reason": "no user"}):
            assert (await http.post(KICK_USER, json=bad)).status_code == 422, bad
    finally:
        await bob.close()


async def test_kick_user_needs_an_operator_and_the_csrf_token(server: ThreadServer) -> None:
    ws, _ = await open_client(server.ws_url, "red?user=carol")
    body = {"user_id": "carol", "reason": "x"}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
            csrf = await login(browser)  # a session cookie, as the page has
            assert (await browser.post(KICK_USER, json=body)).status_code == 403
            wrong = await browser.post(KICK_USER, json=body,
                                       headers={"X-CSRF-Token": csrf[:-2] + "xx"})
            assert (wrong.status_code, wrong.json()["detail"]) == (
                403, "missing or wrong CSRF token")
            cross = await browser.post(KICK_USER, json=body, headers={
                "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
            assert cross.status_code == 403
            viewer = await browser.post(KICK_USER, json=body, headers=VIEWER)
            assert viewer.status_code == 403
            assert await kicks(browser) == []  # nothing happened
            assert (await connections(browser, user="carol"))["total"] == 1

            right = await browser.post(KICK_USER, json=body, headers={"X-CSRF-Token": csrf})
            assert right.json() == {"ok": True, "kicked": 1}
            assert await close_code(ws) == 4000
            (entry,) = await kicks(browser)
            assert (entry["action"], entry["target"], entry["role"]) == (
                "kick_user", "carol", "operator")
    finally:
        await ws.close()


async def kicks(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The audit log's kick_user entries (the login is audited too)."""
    audit = (await http.get(f"{ADMIN}/api/audit")).json()
    return [entry for entry in audit if entry["action"] == "kick_user"]
