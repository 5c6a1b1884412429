"""The wsplugin admin dashboard: live connections and rooms over SSE, broadcast and kick.

``install_ws_manager(app)`` calls ``mount_admin(app, manager, path=..., auth=...)``; an app
can also include ``build_router(create_context(manager, auth=...))`` itself.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.templating import Jinja2Templates

from admin_ui.api import api_router
from admin_ui.audit import AuditLog
from admin_ui.auth import (
    AdminAuth,
    AdminAuthOption,
    Principal,
    credentials,
    resolve_auth,
    signing_key,
)
from admin_ui.context import AdminContext
from admin_ui.dependencies import operator_dependency, principal_dependency
from admin_ui.feed import Feed
from admin_ui.lifespan import add_lifespan_step
from admin_ui.manager import ManagerLike
from admin_ui.pages import pages_router
from admin_ui.redis_state import RedisState, redis_broker
from admin_ui.revocation import RedisRevocations
from admin_ui.sessions import Sessions
from admin_ui.shared_throttle import SharedThrottle
from admin_ui.stream import stream_router
from admin_ui.warmup import warmed

__all__ = [
    "AdminAuth",
    "AdminContext",
    "Principal",
    "build_app",
    "build_router",
    "create_context",
    "mount_admin",
]

TEMPLATES = Path(__file__).parent / "templates"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return Jinja2Templates(env=env)


def _normal_path(path: str) -> str:
    path = "/" + path.strip("/")
    if path == "/":
        raise ValueError("admin_path cannot be the site root")
    return path


def create_context(
    manager: ManagerLike, *, auth: AdminAuthOption = None, login_url: str = "/ws-admin/login"
) -> AdminContext:
    """One dashboard's state. ``login_url`` is only for the start-up log line that shows a
    generated token's login link; the pages take their URLs from each request."""
    resolved, generated = resolve_auth(auth, login_url)
    audit = AuditLog()
    ctx = AdminContext(
        manager=manager,
        auth=resolved,
        sessions=Sessions(signing_key(resolved), credentials(resolved)),
        audit=audit,
        feed=Feed(manager, audit),
        templates=_templates(),
        generated_token=generated,
    )
    broker = redis_broker(manager)
    if broker is not None:  # one Redis for every worker and node: share the login state
        state = RedisState(broker)
        ctx.revocations = RedisRevocations(state)
        ctx.shared_throttle = SharedThrottle(state)
    return ctx


def build_router(ctx: AdminContext) -> APIRouter:
    """Every admin route, relative to where it is included: the pages, the JSON API and the
    stream. ``app.include_router(build_router(ctx), prefix="/ops")`` serves it at ``/ops``;
    links follow that prefix and the ASGI ``root_path``. Run ``ctx.feed.running()`` in the
    app's lifespan (``mount_admin`` does)."""
    viewer = principal_dependency(ctx)
    operator = operator_dependency(ctx, viewer)
    router = APIRouter()
    router.include_router(pages_router(ctx, viewer))
    router.include_router(api_router(ctx, viewer, operator))
    router.include_router(stream_router(ctx, viewer))
    return router


def build_app(ctx: AdminContext) -> FastAPI:
    """``build_router`` in a FastAPI sub-application (what ``build_router`` used to return),
    for ``Mount``: FastAPI's validation errors (422) need a FastAPI app around the routes."""
    sub = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    sub.include_router(build_router(ctx))
    return sub


def mount_admin(
    app: Starlette,
    manager: ManagerLike,
    *,
    path: str = "/ws-admin",
    auth: AdminAuthOption = None,
) -> AdminContext:
    """Mount the dashboard at ``path`` and run its feed in the app's lifespan. FastAPI apps
    get the routes themselves (so the JSON API shows up in ``app.openapi()``); plain
    Starlette apps get a mounted sub-application."""
    path = _normal_path(path)
    login_url = str(getattr(app, "root_path", "") or "").rstrip("/") + path + "/login"
    ctx = create_context(manager, auth=auth, login_url=login_url)
    if isinstance(app, FastAPI):
        app.include_router(build_router(ctx), prefix=path)
        app.add_api_route(path, _to_slash, include_in_schema=False)
    else:
        app.router.routes.append(Mount(path, app=build_app(ctx)))
    add_lifespan_step(app, ctx.feed.running)
    add_lifespan_step(app, partial(warmed, app, path))
    app.state.wsplugin_admin = ctx
    return ctx


async def _to_slash(request: Request) -> RedirectResponse:
    """``/ws-admin`` to ``/ws-admin/`` (a relative redirect, keeping any ``root_path``)."""
    return RedirectResponse(request.url.path + "/", 307)
