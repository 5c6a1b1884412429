"""Every static file of the dashboard, on a FastAPI app and on a plain Starlette app: its
content type, ``nosniff`` and the other security headers, on every kind of answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from admin_ui import mount_admin
from admin_ui.assets import STATIC, STATIC_FILES
from tests.admin_helpers import ADMIN, admin_auth, create_app
from wsplugin import WebSocketManager

TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def test_every_file_in_the_static_directory_is_served() -> None:
    assert sorted(STATIC_FILES) == sorted(path.name for path in STATIC.iterdir())


def starlette_app() -> Starlette:
    app = Starlette()
    mount_admin(app, WebSocketManager(), auth=admin_auth())
    return app


@pytest.mark.parametrize("make", [create_app, starlette_app], ids=["fastapi", "starlette"])
async def test_every_asset_says_nosniff_with_its_type(make: Any) -> None:
    transport = httpx.ASGITransport(app=make())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name in sorted(STATIC_FILES):
            url = f"{ADMIN}/static/{name}"
            full = await client.get(url)
            assert full.status_code == 200 and full.content == (STATIC / name).read_bytes()
            revalidated = await client.get(url, headers={
                "if-none-match": full.headers["etag"],
                "if-modified-since": full.headers["last-modified"],
            })
            head = await client.head(url)
            assert revalidated.status_code == 304 and head.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(full.content))
            assert head.headers["etag"] == full.headers["etag"]
            for response in (full, revalidated, head):
                assert response.headers["x-content-type-options"] == "nosniff", (name, response)
                assert response.headers["cross-origin-resource-policy"] == "same-origin"
            assert full.headers["content-type"] == TYPES[name[name.rindex("."):]]
            assert head.headers["content-type"] == full.headers["content-type"]
        missing = await client.get(f"{ADMIN}/static/nothing.js")
        assert missing.status_code == 404
        assert missing.headers["x-content-type-options"] == "nosniff"


async def test_assets_are_answered_without_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file read in anyio's thread pool would start that pool at the first request: a
    pause of the event loop that every connection of the process waits out."""
    import anyio.to_thread

    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name in sorted(STATIC_FILES):
            for method in ("GET", "HEAD"):
                response = await client.request(method, f"{ADMIN}/static/{name}")
                assert response.status_code == 200, (method, name)
