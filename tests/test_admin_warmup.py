"""The dashboard's routes are built when the app starts, not at the first admin request."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import httpx
import pytest
from starlette.applications import Starlette

from admin_ui import mount_admin
from admin_ui.warmup import WARM_PATHS, warm
from tests.admin_helpers import ADMIN, VIEWER_TOKEN, admin_auth, create_app
from wsplugin import WebSocketManager

LAZY = getattr(fastapi.routing, "_EffectiveRouteContext", None)
"""FastAPI's lazily built route (recent releases); older ones build routes when included."""


def starlette_app() -> Starlette:
    app = Starlette()
    mount_admin(app, WebSocketManager(), auth=admin_auth())
    return app


@pytest.mark.skipif(LAZY is None, reason="this FastAPI builds its routes when they are included")
@pytest.mark.parametrize("make", [create_app, starlette_app], ids=["fastapi", "starlette"])
async def test_no_admin_route_is_built_at_the_first_request(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make()
    async with app.router.lifespan_context(app):
        built: list[object] = []
        original = LAZY.from_api_route  # type: ignore[union-attr]

        def counting(*args: Any, **kwargs: Any) -> Any:
            built.append(kwargs.get("original_route"))
            return original(*args, **kwargs)

        monkeypatch.setattr(LAZY, "from_api_route", counting)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
            for tail in ("/api/overview", "/api/connections", "/login", "/"):
                response = await client.get(ADMIN + tail, headers=headers)
                assert response.status_code == 200, tail
        assert built == []


@pytest.mark.parametrize("make", [create_app, starlette_app], ids=["fastapi", "starlette"])
async def test_warming_changes_nothing_an_operator_sees(make: Any) -> None:
    """Only matching: no failed login counted, no audit entry, no event."""
    app = make()
    ctx = app.state.wsplugin_admin
    assert warm(app, ADMIN) == len(WARM_PATHS)
    assert list(ctx.audit.entries) == []
    assert ctx.throttle.retry_after("127.0.0.1") == 0
    assert not ctx.throttle.locked("127.0.0.1")
    assert ctx.feed.seq == 0  # no event was emitted
