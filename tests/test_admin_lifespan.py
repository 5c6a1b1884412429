"""The dashboard's feed runs in the app's lifespan: nothing of it is left after shutdown."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from starlette.applications import Starlette

from admin_ui import mount_admin
from admin_ui.lifespan import add_lifespan_step
from tests.admin_helpers import ADMIN, OPERATOR, admin_auth, create_app, manager_of, sse_events
from tests.support import ThreadServer
from wsplugin import WebSocketManager

SAMPLER = "wsplugin-admin-sampler"


def samplers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == SAMPLER and not t.done()]


async def test_the_lifespan_stops_the_feed_with_a_stream_still_open() -> None:
    app = create_app()
    ctx = app.state.wsplugin_admin
    manager = manager_of(app)
    async with app.router.lifespan_context(app):
        subscriber = ctx.feed.subscribe()  # what an open stream does: the sampler runs
        assert len(samplers()) == 1
        manager.events.emit("connected", connection_id="a")
        assert ctx.feed.seq == 1
    assert samplers() == []
    assert not ctx.feed.listening
    manager.events.emit("connected", connection_id="b")
    assert ctx.feed.seq == 1  # no longer subscribed to the manager's events
    ctx.feed.unsubscribe_stream(subscriber)


async def test_a_second_lifespan_of_the_same_app_listens_again() -> None:
    app = create_app()
    ctx = app.state.wsplugin_admin
    for _ in range(2):
        async with app.router.lifespan_context(app):
            assert ctx.feed.listening
            manager_of(app).events.emit("joined", connection_id="c", room="r")
        assert not ctx.feed.listening
    assert ctx.feed.seq == 2


async def test_a_plain_starlette_app_runs_the_feed_in_its_lifespan() -> None:
    app = Starlette()
    ctx = mount_admin(app, WebSocketManager(), auth=admin_auth())
    async with app.router.lifespan_context(app):
        assert ctx.feed.listening
    assert not ctx.feed.listening


async def test_a_lifespan_step_wraps_the_apps_own_lifespan() -> None:
    order: list[str] = []

    class Step:
        async def __aenter__(self) -> None:
            order.append("step start")

        async def __aexit__(self, *exc: object) -> None:
            order.append("step stop")

    app = Starlette()
    add_lifespan_step(app, Step)
    async with app.router.lifespan_context(app):
        order.append("running")
    assert order == ["step start", "running", "step stop"]


@pytest.mark.timeout(60)
async def test_no_admin_task_is_left_after_a_real_server_stops() -> None:
    app = create_app()
    ctx = app.state.wsplugin_admin
    # Without signal handlers (a server in a thread) sse-starlette does not see the shutdown:
    # uvicorn's graceful timeout ends the open stream, as it would any long response.
    server = ThreadServer(app, timeout_graceful_shutdown=1).start()
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=10) as http,
            http.stream("GET", f"{ADMIN}/api/stream", params={"ping": 1}) as response,
        ):
            events = sse_events(response)
            assert (await anext(events))[0] == "snapshot"
            assert ctx.feed.subscribers == 1
            await asyncio.to_thread(server.stop)  # with the stream open
            with contextlib.suppress(httpx.HTTPError):  # the server cut it
                assert [kind async for kind, _ in events if kind != "delta"] == []
    finally:
        server.stop()
    assert not server.thread.is_alive()
    assert not ctx.feed.listening
    assert ctx.feed._task is None and ctx.feed.subscribers == 0
