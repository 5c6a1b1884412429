"""The dashboard's URLs follow where it is served: its mount path and the ASGI root_path.

Two real deployments behind a prefix, driven like a browser (every link, form action,
script, stylesheet, cookie and the stream taken from the pages themselves):

- ``uvicorn --root-path /prefix`` behind a proxy that strips the prefix (uvicorn puts
  root_path back in front of the path it receives);
- a proxy that keeps the prefix, the app mounted at ``/prefix`` in an outer app (the same
  scope: the path includes root_path, as Starlette >= 0.33 expects).

The proxy is an httpx transport that forwards only ``/prefix/...``: a link that forgot the
prefix gets the proxy's 404, as it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from admin_ui import build_app, build_router, create_context, mount_admin
from tests.admin_helpers import (
    ADMIN,
    OPERATOR,
    OPERATOR_TOKEN,
    admin_auth,
    create_app,
    manager_of,
    open_client,
    sse_events,
)
from tests.support import ThreadServer
from wsplugin import WebSocketManager

PREFIX = "/prefix"
BASE = PREFIX + ADMIN
LINK = re.compile(r'(?:href|src|action)="([^"]*)"')
DATA_BASE = re.compile(r'data-base="([^"]*)"')
CSRF = re.compile(r'data-csrf="([^"]+)"')


class PrefixProxy(httpx.AsyncBaseTransport):
    """A reverse proxy for ``PREFIX``: forwards ``/prefix/...`` to ``upstream`` (without the
    prefix if ``strip``), answers 404 to anything else."""

    def __init__(self, upstream: str, *, strip: bool) -> None:
        self.upstream = httpx.URL(upstream)
        self.strip = strip
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path
        if not path.startswith(PREFIX.encode() + b"/"):
            return httpx.Response(404, text="not behind the proxy")
        if self.strip:
            path = path[len(PREFIX) :]
        url = request.url.copy_with(
            scheme=self.upstream.scheme, host=self.upstream.host, port=self.upstream.port,
            raw_path=path,
        )
        forwarded = httpx.Request(request.method, url, headers=request.headers,
                                  stream=request.stream, extensions=request.extensions)
        return await self.inner.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self.inner.aclose()


def links(html: str) -> list[str]:
    return LINK.findall(html)


def behind_a_stripping_proxy(app: FastAPI) -> tuple[Any, dict[str, Any], bool]:
    return app, {"root_path": PREFIX}, True


def behind_a_keeping_proxy(app: FastAPI) -> tuple[Any, dict[str, Any], bool]:
    @contextlib.asynccontextmanager
    async def lifespan(outer: Starlette) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    return Starlette(routes=[Mount(PREFIX, app=app)], lifespan=lifespan), {}, False


@contextlib.asynccontextmanager
async def browser(server: ThreadServer, *, strip: bool) -> AsyncIterator[httpx.AsyncClient]:
    """A client that, like a browser, sends its requests to the site (here: the proxy)."""
    proxy = PrefixProxy(server.url, strip=strip)
    origin = {"Origin": server.url}
    async with httpx.AsyncClient(
        transport=proxy, base_url=server.url, headers=origin, timeout=10
    ) as client:
        yield client


async def log_in(client: httpx.AsyncClient) -> str:
    """From the bare admin URL to the dashboard, following only what the pages say."""
    bare = await client.get(BASE)
    assert bare.status_code == 307 and bare.headers["location"] == BASE + "/"
    page = await client.get(bare.headers["location"])
    assert page.status_code == 303 and page.headers["location"] == BASE + "/login"
    form = await client.get(page.headers["location"])
    assert form.status_code == 200
    found = links(form.text)  # the token form and the password form post to the same URL
    assert found[:2] == [f"{BASE}/static/admin.css", f"{BASE}/static/login.js"]
    assert set(found[2:]) == {f"{BASE}/login"}
    await assert_served(client, found[:2])
    done = await client.post(found[2], data={"token": OPERATOR_TOKEN})
    assert done.status_code == 303 and done.headers["location"] == BASE + "/"
    cookie = done.headers["set-cookie"]
    assert f"Path={BASE};" in cookie or cookie.endswith(f"Path={BASE}"), cookie
    return str(done.headers["location"])


async def assert_served(client: httpx.AsyncClient, urls: list[str]) -> None:
    for url in urls:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(("text/css", "text/javascript"))


async def read_until(
    events: AsyncIterator[tuple[str, dict[str, Any]]], predicate: Any
) -> dict[str, Any]:
    async def scan() -> dict[str, Any]:
        async for kind, data in events:
            if predicate(kind, data):
                return data
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(scan(), 10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deploy", [behind_a_stripping_proxy, behind_a_keeping_proxy])
async def test_dashboard_behind_a_proxy_prefix(deploy: Any) -> None:
    inner = create_app()
    app, config, strip = deploy(inner)
    with ThreadServer(app, **config) as server:
        async with browser(server, strip=strip) as client:
            dashboard = await client.get(await log_in(client))
            assert dashboard.status_code == 200
            match = DATA_BASE.search(dashboard.text)
            csrf = CSRF.search(dashboard.text)
            assert match is not None and csrf is not None
            base = match.group(1)  # what admin.js prefixes to /api/... and /login
            assert base == BASE
            static = [f"{BASE}/static/admin.css", f"{BASE}/static/admin.js",
                      f"{BASE}/static/charts.js", f"{BASE}/static/charts.css"]
            assert sorted(links(dashboard.text)) == sorted([*static, f"{BASE}/logout"])
            await assert_served(client, static)
            ws_url = server.ws_url + ("" if strip else PREFIX)  # the proxy's ws forwarding
            await drive_the_api(client, ws_url, base, csrf.group(1))
            out = await client.post(next(u for u in links(dashboard.text) if u.endswith("/logout")))
            assert out.status_code == 303 and out.headers["location"] == BASE + "/login"
            assert not client.cookies  # deleted with the path it was set with
            again = await client.get(BASE + "/")
            assert again.status_code == 303


async def drive_the_api(client: httpx.AsyncClient, ws_url: str, base: str, csrf: str) -> None:
    """The JSON API, the SSE stream and a kick, at the URLs the page's script uses."""
    me = await client.get(base + "/api/me")
    assert me.status_code == 200 and me.json()["role"] == "operator"
    ws, conn_id = await open_client(ws_url)
    try:
        async with client.stream("GET", base + "/api/stream", params={"ping": 1}) as stream:
            assert stream.status_code == 200
            events = sse_events(stream)
            snapshot = await read_until(events, lambda kind, data: kind == "snapshot")
            assert conn_id in [c["id"] for c in snapshot["connections"]["items"]]
            kick = await client.post(
                base + "/api/kick",
                json={"connection_id": conn_id, "reason": "behind a proxy"},
                headers={"X-CSRF-Token": csrf},
            )
            assert kick.status_code == 200 and kick.json()["ok"] is True
            kicked = await read_until(
                events, lambda k, d: any(e["kind"] == "kicked" for e in d.get("events", []))
            )
            assert kicked["events"][0]["connection_id"] == conn_id
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 4000 and ws.close_reason == "behind a proxy"
    finally:
        await ws.close()


# -- in process: custom mount paths under a root_path ---------------------------------------


def client_for(app: Any, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def assert_links_under(http: httpx.AsyncClient, base: str) -> None:
    assert (await http.get(base)).headers["location"] == base + "/"
    assert (await http.get(base + "/")).headers["location"] == base + "/login"
    form = await http.get(base + "/login")
    assert all(link.startswith(base + "/") for link in links(form.text)), form.text
    done = await http.post(base + "/login", data={"token": OPERATOR_TOKEN})
    assert done.headers["location"] == base + "/"
    assert f"Path={base}" in done.headers["set-cookie"]
    page = await http.get(base + "/")
    assert f'data-base="{base}"' in page.text
    assert (await http.get(base + "/api/overview", headers=OPERATOR)).status_code == 200


@pytest.mark.parametrize("root_path", ["", PREFIX])
async def test_custom_admin_path(root_path: str) -> None:
    app = create_app(admin_path="/ops/admin")
    async with client_for(app, root_path) as http:
        await assert_links_under(http, root_path + "/ops/admin")
        assert (await http.get(root_path + ADMIN + "/")).status_code == 404
    assert "/ops/admin/api/overview" in app.openapi()["paths"]


@pytest.mark.parametrize("root_path", ["", PREFIX])
async def test_plain_starlette_app_under_a_root_path(root_path: str) -> None:
    app = Starlette()
    mount_admin(app, WebSocketManager(), path="/ops", auth=admin_auth())
    async with client_for(app, root_path) as http:
        form = await http.get(root_path + "/ops/login")
        assert all(link.startswith(root_path + "/ops/") for link in links(form.text))
        done = await http.post(root_path + "/ops/login", data={"token": OPERATOR_TOKEN})
        assert done.headers["location"] == root_path + "/ops/"
        assert f"Path={root_path}/ops" in done.headers["set-cookie"]


async def test_build_router_is_included_where_the_app_wants_it() -> None:
    manager = WebSocketManager()
    ctx = create_context(manager, auth=admin_auth())
    app = FastAPI()
    app.include_router(build_router(ctx), prefix="/team/dash")
    async with client_for(app) as http:
        assert (await http.get("/team/dash/")).headers["location"] == "/team/dash/login"
        overview = await http.get("/team/dash/api/overview", headers=OPERATOR)
        assert overview.json()["node"] == manager.node_id


async def test_build_app_is_the_old_sub_application() -> None:
    ctx = create_context(WebSocketManager(), auth=admin_auth())
    app = Starlette(routes=[Mount("/dash", app=build_app(ctx))])
    async with client_for(app) as http:
        assert (await http.get("/dash/")).headers["location"] == "/dash/login"
        bad = await http.get("/dash/api/connections", params={"limit": 0}, headers=OPERATOR)
        assert bad.status_code == 422


async def test_the_installed_manager_is_reached_under_a_root_path() -> None:
    app = create_app()
    async with client_for(app, PREFIX) as http:
        overview = await http.get(BASE + "/api/overview", headers=OPERATOR)
        assert overview.json()["node"] == manager_of(app).node_id
