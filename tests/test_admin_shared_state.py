"""The dashboard's cluster-wide state in a real Redis: the shared login throttle follows the
in-memory rules exactly, revocations are bounded and expire, and an unreachable Redis
refuses sessions instead of accepting them unchecked."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from admin_ui.redis_state import RedisState
from admin_ui.revocation import RedisRevocations
from admin_ui.shared_throttle import SharedThrottle
from admin_ui.throttle import Limits, Throttle
from tests.admin_helpers import ADMIN, OPERATOR, create_app, manager_of
from tests.redis_server import RedisFactory, RedisServer
from tests.test_admin_sessions import ME, client_for, login_cookie, with_cookie
from wsplugin.backends.redis import RedisBroker

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def close_clients(broker: RedisBroker) -> None:
    """A broker that was never started (no lifespan) only has its clients to close."""
    for client in (broker.client, broker.sub_client):
        await client.aclose(close_connection_pool=True)


@pytest.fixture
async def state(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisState]:
    broker = RedisBroker(redis_url, prefix=redis_prefix)
    try:
        yield RedisState(broker)
    finally:
        await close_clients(broker)


# Long enough in real seconds that no key expires (Redis TTLs are real time) while the
# fake clock jumps through locks, windows and alerts.
LIMITS = Limits(
    attempts=3, window=600.0, first_lock=100.0, max_lock=2400.0, forget_after=3000.0,
    global_failures=8, global_window=600.0, global_lock=300.0, max_addresses=4,
)


@pytest.mark.timeout(120)
async def test_the_shared_throttle_answers_exactly_like_the_local_one(
    state: RedisState,
) -> None:
    clock = Clock()
    local, reference = Throttle(LIMITS, clock=clock), Throttle(LIMITS, clock=clock)
    shared = SharedThrottle(state, clock=clock)
    rng = random.Random(7)
    addresses = [f"198.51.100.{n}" for n in range(6)]
    seen = {"lock": 0, "alert": 0}
    for _ in range(1500):
        clock.now += rng.choice([0.25, 1.0, 25.0, 50.0, 150.0, 400.0, 1200.0])
        address = rng.choice(addresses)
        if rng.random() < 0.6:
            expected, got = reference.failed(address), await shared.failed(local, address)
        else:
            expected = reference.retry_after(address)
            got = await shared.retry_after(local, address)
        assert got == pytest.approx(expected, abs=1e-6), (address, clock.now)
        seen["lock"] += reference.locked(address)
        seen["alert"] += reference.alert() > 0
    assert seen["lock"] and seen["alert"]  # the sequence went through locks and alerts
    assert len(local._addresses) == 0  # Redis answered every time: no fallback


async def test_the_shared_throttle_keeps_few_keys_that_expire(
    state: RedisState, redis_url: str
) -> None:
    clock = Clock()
    shared = SharedThrottle(state, clock=clock)
    local = Throttle(Limits(max_addresses=50), clock=clock)
    for n in range(200):
        clock.now += 0.01
        await shared.failed(local, f"10.0.0.{n}")
    client = state.client
    keys = sorted(k.decode() if isinstance(k, bytes) else k
                  for k in await client.keys(state.key("*")))
    assert keys == sorted(shared.keys)
    assert await client.hlen(shared.keys[0]) == 50 == await client.zcard(shared.keys[1])
    assert await client.llen(shared.keys[2]) == Limits().global_failures
    for key in shared.keys:
        assert 0 < await client.pttl(key) <= 1_200_000  # forget_after + max_lock at most


async def test_redis_revocations_are_bounded_and_expire(state: RedisState) -> None:
    clock = Clock()
    revocations = RedisRevocations(state, capacity=3, clock=clock)
    start = clock.now
    for n in range(5):
        await revocations.revoke(f"s{n}", start + 100 + n)
    assert [await revocations.revoked(f"s{n}", start + 100 + n) for n in range(5)] == [True] * 5
    assert await revocations.revoked("other-old", start + 101)  # under the floor
    assert not await revocations.revoked("other-new", start + 101.5)
    client = state.client
    assert await client.zcard(revocations.keys[0]) == 3
    assert 0 < await client.pttl(revocations.keys[0]) <= 104_000  # the newest's lifetime
    assert 0 < await client.pttl(revocations.keys[1]) <= 101_000  # the floor's
    clock.now = start + 102.5
    await revocations.revoke("s9", start + 200)
    assert await client.zcard(revocations.keys[0]) == 3  # s3, s4, s9


@pytest.mark.timeout(60)
async def test_an_unreachable_redis_refuses_sessions_and_throttles_per_process(
    redis_factory: RedisFactory, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    app = create_app(backend=server.url, redis_prefix=redis_prefix)
    broker = manager_of(app).broker
    assert isinstance(broker, RedisBroker)
    try:
        await refused_while_redis_is_down(app, server, caplog)
    finally:
        await close_clients(broker)
    admin = [r for r in caplog.records if r.name == "wsplugin.admin"]
    assert not [r for r in admin if r.levelno >= logging.ERROR]
    assert sum("Redis failed" in r.getMessage() for r in admin) <= 2  # not once per request


async def refused_while_redis_is_down(
    app: FastAPI, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(app) as http:
        cookie, _ = await login_cookie(http)
        server.kill()
        with caplog.at_level(logging.WARNING, logger="wsplugin.admin"):
            refused = await http.get(ME, headers=with_cookie(cookie))
            assert refused.status_code == 503 and "Redis" in refused.json()["detail"]
            page = await http.get(f"{ADMIN}/", headers=with_cookie(cookie))
            assert page.status_code == 503
            out = await http.post(f"{ADMIN}/logout", headers=with_cookie(cookie))
            assert out.status_code == 503 and "could not be revoked" in out.text
            assert 'wsadmin_session=""' in out.headers["set-cookie"]
            wrong = {"Authorization": "Bearer wrong"}
            codes = [(await http.get(ME, headers=wrong)).status_code for _ in range(6)]
            assert codes == [401] * 4 + [429] * 2  # counted in this process meanwhile
            assert app.state.wsplugin_admin.throttle.locked("127.0.0.1")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("192.0.2.1", 1)), base_url="http://t"
        ) as other:
            assert (await other.get(ME, headers=OPERATOR)).status_code == 200  # no Redis needed
