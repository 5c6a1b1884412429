"""Admin sessions end on the server: logout revokes, a changed credential revokes, in one
process (memory://) and across workers sharing a real Redis; failed logins count
cluster-wide with Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from admin_ui import AdminAuth
from admin_ui.auth import Principal
from admin_ui.revocation import MemoryRevocations
from admin_ui.sessions import COOKIE, Sessions
from tests.admin_helpers import (
    ADMIN,
    CSRF,
    OPERATOR_TOKEN,
    PASSWORD,
    USER,
    create_app,
    sse_events,
)
from tests.support import ThreadServer

ME = f"{ADMIN}/api/me"
BROADCAST = f"{ADMIN}/api/broadcast"
BODY = {"room": "lobby", "data": "hello"}
SECRET = "a-fixed-signing-secret"


def client_for(app: Any, base_url: str = "http://test") -> httpx.AsyncClient:
    if isinstance(app, str):
        return httpx.AsyncClient(base_url=app, timeout=10)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def login_cookie(
    http: httpx.AsyncClient, form: dict[str, str] | None = None
) -> tuple[str, str]:
    """Log in with the form; returns the session cookie's value and the page's CSRF token."""
    response = await http.post(f"{ADMIN}/login", data=form or {"token": OPERATOR_TOKEN})
    assert response.status_code == 303, response.text
    cookie = http.cookies.get(COOKIE)
    assert cookie
    page = await http.get(f"{ADMIN}/", headers=with_cookie(cookie))
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match is not None
    return cookie, match.group(1)


def with_cookie(cookie: str, csrf: str = "") -> dict[str, str]:
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    return headers


async def assert_session_works(http: httpx.AsyncClient, cookie: str, csrf: str) -> None:
    assert (await http.get(ME, headers=with_cookie(cookie))).status_code == 200
    acted = await http.post(BROADCAST, json=BODY, headers=with_cookie(cookie, csrf))
    assert acted.status_code == 200, acted.text


async def assert_session_refused(http: httpx.AsyncClient, cookie: str, csrf: str) -> None:
    assert (await http.get(ME, headers=with_cookie(cookie))).status_code == 401
    acted = await http.post(BROADCAST, json=BODY, headers=with_cookie(cookie, csrf))
    assert acted.status_code == 401, acted.text  # the session, not the CSRF token
    page = await http.get(f"{ADMIN}/", headers=with_cookie(cookie))
    assert (page.status_code, page.headers.get("location")) == (303, f"{ADMIN}/login")


async def logout(http: httpx.AsyncClient, cookie: str) -> httpx.Response:
    response = await http.post(f"{ADMIN}/logout", headers=with_cookie(cookie))
    assert response.status_code == 303
    assert f'{COOKIE}=""' in response.headers["set-cookie"]  # the browser drops it too
    return response


# ----------------------------------------------------------------- one process (memory://)


async def test_logout_revokes_the_session_on_the_server() -> None:
    app = create_app()
    async with client_for(app) as browser, client_for(app) as thief:
        cookie, csrf = await login_cookie(browser)
        await assert_session_works(thief, cookie, csrf)  # a copy of the cookie works...
        await logout(browser, cookie)
        await assert_session_refused(thief, cookie, csrf)  # ...until the owner logs out
        await assert_session_refused(browser, cookie, csrf)
        again, csrf_again = await login_cookie(browser)  # logging in again works
        await assert_session_works(thief, again, csrf_again)


async def test_logout_ends_only_that_session() -> None:
    app = create_app()
    async with client_for(app) as first, client_for(app) as second:
        one, csrf_one = await login_cookie(first)
        two, csrf_two = await login_cookie(second)
        await logout(first, one)
        await assert_session_refused(second, one, csrf_one)
        await assert_session_works(second, two, csrf_two)


def auth_with(token: str, password: str) -> AdminAuth:
    """Fixed signing secret: the key does not change with the credentials."""
    return AdminAuth(operators=[token, (USER, password)], secret=SECRET)


async def test_a_changed_token_or_password_ends_the_sessions_opened_with_it() -> None:
    before = create_app(admin_auth=auth_with("token-one", PASSWORD))
    async with client_for(before) as by_token, client_for(before) as by_password:
        token_cookie, token_csrf = await login_cookie(by_token, {"token": "token-one"})
        pair = {"username": USER, "password": PASSWORD}
        password_cookie, _ = await login_cookie(by_password, pair)
    # The token is changed (a restart with a new WSPLUGIN_ADMIN_TOKEN): its sessions end,
    # the password's sessions go on.
    token_changed = create_app(admin_auth=auth_with("token-two", PASSWORD))
    async with client_for(token_changed) as http:
        await assert_session_refused(http, token_cookie, token_csrf)
        assert (await http.get(ME, headers=with_cookie(password_cookie))).status_code == 200
    password_changed = create_app(admin_auth=auth_with("token-one", "new-password"))
    async with client_for(password_changed) as http:
        assert (await http.get(ME, headers=with_cookie(password_cookie))).status_code == 401
        assert (await http.get(ME, headers=with_cookie(token_cookie))).status_code == 200


def test_a_session_carries_a_fingerprint_never_the_credential() -> None:
    import base64
    import json

    sessions = Sessions(b"k" * 32, [("operator", OPERATOR_TOKEN), ("operator", (USER, PASSWORD))])
    for credential in (OPERATOR_TOKEN, (USER, PASSWORD)):
        who = Principal("someone", "operator", "basic")
        payload = sessions.issue(who, credential).partition(".")[0]
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        text = json.dumps(body)
        assert OPERATOR_TOKEN not in text and PASSWORD not in text
        assert body["f"] == sessions.fingerprint("operator", credential)
    # The same credential as a viewer is another fingerprint: a demoted credential's
    # operator sessions end.
    assert sessions.fingerprint("viewer", OPERATOR_TOKEN) != sessions.fingerprint(
        "operator", OPERATOR_TOKEN
    )


async def test_revocations_are_bounded_and_overflow_refuses_more_never_less() -> None:
    now = [1000.0]
    revocations = MemoryRevocations(capacity=3, clock=lambda: now[0])
    for n in range(5):  # session n expires at 2000 + n
        await revocations.revoke(f"s{n}", 2000.0 + n)
    assert len(revocations) == 3
    assert [await revocations.revoked(f"s{n}", 2000.0 + n) for n in range(5)] == [True] * 5
    # s0 and s1 were forgotten: every session expiring no later than s1 is refused now,
    # later ones are not.
    assert await revocations.revoked("other-old", 2001.0)
    assert not await revocations.revoked("other-new", 2001.5)
    now[0] = 2002.5  # s0..s2 have expired: they are forgotten on the next revocation
    await revocations.revoke("s9", 3000.0)
    assert len(revocations) == 3  # s3, s4, s9
    await revocations.revoke("already-expired", 2000.0)
    assert len(revocations) == 3


@pytest.mark.timeout(60)
async def test_a_logout_ends_an_open_stream_of_that_session() -> None:
    app = create_app()
    with ThreadServer(app) as server:
        app.state.wsplugin_admin.session_recheck = 0.1
        async with client_for(server.url) as browser, client_for(server.url) as thief:
            cookie, _ = await login_cookie(browser)
            async with thief.stream(
                "GET", f"{ADMIN}/api/stream", params={"ping": 1}, headers=with_cookie(cookie)
            ) as response:
                assert response.status_code == 200
                events = sse_events(response)
                kind, _ = await anext(events)
                assert kind == "snapshot"
                await logout(browser, cookie)
                rest = [kind async for kind, _ in events]  # the stream ends by itself
            assert "snapshot" not in rest


# ---------------------------------------------------- two workers sharing one real Redis


@contextlib.contextmanager
def two_workers(redis_url: str, prefix: str, **options: Any) -> Iterator[list[str]]:
    """Two apps, each with its own manager and Redis broker, on two real uvicorn servers,
    sharing one Redis (what two worker processes or two nodes are)."""
    apps: list[FastAPI] = [
        create_app(backend=redis_url, redis_prefix=prefix, **options) for _ in range(2)
    ]
    with ThreadServer(apps[0]) as one, ThreadServer(apps[1]) as two:
        yield [one.url, two.url]


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    with two_workers(redis_url, redis_prefix) as urls:
        async with client_for(urls[0]) as one, client_for(urls[1]) as two:
            yield [one, two]


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_logout_on_one_worker_is_honoured_by_the_other(
    workers: list[httpx.AsyncClient],
) -> None:
    one, two = workers
    cookie, csrf = await login_cookie(one)
    await assert_session_works(two, cookie, csrf)
    await logout(one, cookie)
    await assert_session_refused(two, cookie, csrf)
    await assert_session_refused(one, cookie, csrf)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_failed_logins_count_across_workers(workers: list[httpx.AsyncClient]) -> None:
    one, two = workers
    wrong = {"Authorization": "Bearer wrong-token"}
    codes = []
    for n in range(6):
        codes.append((await (one if n % 2 == 0 else two).get(ME, headers=wrong)).status_code)
    assert codes == [401] * 4 + [429] * 2  # 4 free guesses in all, not 4 per worker
    for http in (one, two):  # locked on both: even the right token is not checked
        refused = await http.get(ME, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert refused.status_code == 429 and refused.headers["retry-after"]
    login_form = await two.post(f"{ADMIN}/login", data={"token": OPERATOR_TOKEN})
    assert login_form.status_code == 429
