"""Failed-login throttling: the bookkeeping with a fake clock, then every login path."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from admin_ui.throttle import Limits, Throttle
from tests.admin_helpers import (
    ADMIN,
    OPERATOR,
    OPERATOR_TOKEN,
    PASSWORD,
    USER,
    VIEWER_TOKEN,
    create_app,
    login,
)
from tests.support import ThreadServer

ME = f"{ADMIN}/api/me"
WRONG = {"Authorization": "Bearer wrong-token"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_five_failures_lock_one_second_then_doubling(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    assert [throttle.failed("a") for _ in range(4)] == [0, 0, 0, 0]
    assert throttle.failed("a") == 1.0
    assert throttle.retry_after("a") == 1.0 and throttle.retry_after("b") == 0
    clock.now += 1
    assert throttle.retry_after("a") == 0
    assert throttle.failed("a") == 2.0
    locks = []
    for _ in range(12):
        clock.now += throttle.retry_after("a")
        locks.append(throttle.failed("a"))
    assert locks[:7] == [4, 8, 16, 32, 64, 128, 256]
    assert locks[7:] == [300] * 5  # capped at five minutes


def test_failures_age_out_and_the_memory_is_forgotten(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    for _ in range(4):
        throttle.failed("a")
    clock.now += 61
    assert throttle.failed("a") == 0  # the four are outside the 60 s window
    for _ in range(4):
        throttle.failed("a")
    assert throttle.locked("a")
    clock.now += 901
    assert throttle.retry_after("a") == 0
    assert [throttle.failed("a") for _ in range(5)] == [0, 0, 0, 0, 1.0]  # level 1 again


def test_global_alert_spares_clean_addresses_only_until_they_fail(clock: Clock) -> None:
    throttle = Throttle(clock=clock)
    for n in range(99):
        assert throttle.failed(f"bot{n}") == 0
    assert throttle.failed("bot99") == 30.0  # the 100th failure within a minute
    assert throttle.alert() == 30.0
    assert throttle.retry_after("bot1") == 30.0  # a recent failure: not even checked
    assert throttle.retry_after("clean") == 0  # a clean address is checked...
    assert throttle.failed("clean") == 30.0  # ...and a failure is answered 429
    clock.now += 31
    assert throttle.alert() == 0 and throttle.retry_after("bot1") == 0


def test_addresses_are_bounded(clock: Clock) -> None:
    throttle = Throttle(Limits(max_addresses=3), clock=clock)
    for address in ("a", "b", "c", "d"):
        for _ in range(5):
            throttle.failed(address)
    assert not throttle.locked("a")  # evicted, the oldest
    assert all(throttle.locked(address) for address in ("b", "c", "d"))


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def app() -> FastAPI:
    return create_app()


@pytest.fixture
async def attacker(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(app, "203.0.113.9") as http:
        yield http


async def test_fifty_wrong_bearer_tokens_get_429_with_retry_after(
    app: FastAPI, attacker: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wsplugin.admin"):
        codes = [(await attacker.get(ME, headers=WRONG)).status_code for _ in range(50)]
    assert codes == [401] * 4 + [429] * 46
    refused = await attacker.get(ME, headers=WRONG)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"].startswith("too many failed logins")
    # Locked means locked: even the right token is not checked from that address now.
    assert (await attacker.get(ME, headers=OPERATOR)).status_code == 429
    # Someone else is not slowed down at all.
    async with client_from(app, "198.51.100.7") as other:
        assert (await other.get(ME, headers=OPERATOR)).status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "failed login" in m]
    assert len(failed) == 5 and all("203.0.113.9" in m and ME in m for m in failed)
    assert all("wrong-token" not in m for m in messages)
    assert sum("login refused" in m for m in messages) == 45 + 2  # and the two after


async def test_a_session_cookie_is_never_throttled(
    app: FastAPI, attacker: httpx.AsyncClient
) -> None:
    await login(attacker)
    for _ in range(6):
        await attacker.get(ME, headers=WRONG)
    assert (await attacker.get(ME, headers=WRONG)).status_code == 429
    assert (await attacker.get(ME)).status_code == 200  # the cookie alone still works
    assert (await attacker.get(f"{ADMIN}/")).status_code == 200


async def test_basic_auth_is_throttled(attacker: httpx.AsyncClient) -> None:
    wrong = base64.b64encode(f"{USER}:nope".encode()).decode()
    right = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    codes = [
        (await attacker.get(ME, headers={"Authorization": f"Basic {wrong}"})).status_code
        for _ in range(6)
    ]
    assert codes == [401] * 4 + [429] * 2
    locked = await attacker.get(ME, headers={"Authorization": f"Basic {right}"})
    assert locked.status_code == 429 and "retry-after" in locked.headers


@pytest.mark.parametrize(
    "form", [{"token": "wrong"}, {"username": USER, "password": "wrong"}],
    ids=["token", "password"],
)
async def test_login_form_is_throttled(attacker: httpx.AsyncClient, form: dict[str, str]) -> None:
    codes = [
        (await attacker.post(f"{ADMIN}/login", data=form)).status_code for _ in range(4)
    ]
    assert codes == [401] * 4
    locked = await attacker.post(f"{ADMIN}/login", data=form)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
    assert "Too many failed logins" in locked.text and "<form" in locked.text
    right = await attacker.post(f"{ADMIN}/login", data={"token": OPERATOR_TOKEN})
    assert right.status_code == 429  # the form and the API share one budget


async def test_the_budget_is_shared_by_header_and_form(attacker: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await attacker.get(ME, headers=WRONG)).status_code == 401
    for _ in range(2):
        assert (await attacker.post(f"{ADMIN}/login", data={"token": "x"})).status_code == 401
    assert (await attacker.get(f"{ADMIN}/", headers=WRONG)).status_code == 429


async def test_botnet_spray_trips_the_global_alert(app: FastAPI) -> None:
    for n in range(100):
        async with client_from(app, f"10.0.{n // 250}.{n % 250}") as bot:
            assert (await bot.get(ME, headers=WRONG)).status_code in (401, 429)
    async with client_from(app, "10.0.0.1") as bot:  # a sprayer, again: refused unchecked
        assert (await bot.get(ME, headers=OPERATOR)).status_code == 429
    async with client_from(app, "192.0.2.50") as newcomer:
        failed = await newcomer.get(ME, headers=WRONG)
        assert failed.status_code == 429 and int(failed.headers["retry-after"]) <= 30
    async with client_from(app, "192.0.2.51") as operator:
        assert (await operator.get(ME, headers=OPERATOR)).status_code == 200
        viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        assert (await operator.get(ME, headers=viewer)).json()["role"] == "viewer"


async def test_a_token_in_the_query_string_is_refused_and_not_counted(
    attacker: httpx.AsyncClient,
) -> None:
    for _ in range(10):
        page = await attacker.get(f"{ADMIN}/login", params={"token": OPERATOR_TOKEN})
        assert page.status_code == 400
        assert "query string" in page.text and "#token=" in page.text
        assert "set-cookie" not in page.headers
    assert (await attacker.get(ME)).status_code == 401
    assert (await attacker.get(ME, headers=OPERATOR)).status_code == 200


async def test_real_server_throttles_by_peer_address(app: FastAPI) -> None:
    with ThreadServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            codes = [(await http.get(ME, headers=WRONG)).status_code for _ in range(6)]
            assert codes == [401] * 4 + [429] * 2
    assert app.state.wsplugin_admin.throttle.locked("127.0.0.1")
