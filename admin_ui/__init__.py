"""The wsplugin admin dashboard: live connections and rooms over SSE, broadcast and kick.

``install_ws_manager(app)`` calls ``mount_admin(app, manager, path=..., auth=...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import jinja2
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.templating import Jinja2Templates

from admin_ui.api import api_router
from admin_ui.audit import AuditLog
from admin_ui.auth import AdminAuth, AdminAuthOption, Principal, resolve_auth, signing_key
from admin_ui.context import AdminContext
from admin_ui.dependencies import operator_dependency, principal_dependency
from admin_ui.feed import Feed
from admin_ui.manager import ManagerLike
from admin_ui.pages import pages_router
from admin_ui.sessions import Sessions
from admin_ui.stream import stream_router

__all__ = ["AdminAuth", "AdminContext", "Principal", "build_router", "mount_admin"]

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
    manager: ManagerLike, *, path: str = "/ws-admin", auth: AdminAuthOption = None
) -> AdminContext:
    path = _normal_path(path)
    resolved, generated = resolve_auth(auth, path + "/login")
    audit = AuditLog()
    return AdminContext(
        manager=manager,
        path=path,
        auth=resolved,
        sessions=Sessions(signing_key(resolved)),
        audit=audit,
        feed=Feed(manager, audit),
        templates=_templates(),
        generated_token=generated,
    )


def build_router(ctx: AdminContext) -> FastAPI:
    """A FastAPI sub-application with every admin route, relative to the mount path."""
    viewer = principal_dependency(ctx)
    operator = operator_dependency(ctx, viewer)
    sub = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    for router in (pages_router(ctx, viewer), api_router(ctx, viewer, operator)):
        sub.include_router(router)
    sub.include_router(stream_router(ctx, viewer))
    return sub


def mount_admin(
    app: Starlette,
    manager: ManagerLike,
    *,
    path: str = "/ws-admin",
    auth: AdminAuthOption = None,
) -> AdminContext:
    """Mount the dashboard at ``path``. FastAPI apps get the routes themselves (so the JSON
    API shows up in ``app.openapi()``); plain Starlette apps get a mounted sub-application."""
    ctx = create_context(manager, path=path, auth=auth)
    sub = build_router(ctx)
    if isinstance(app, FastAPI):
        app.include_router(sub.router, prefix=ctx.path)
        app.add_api_route(ctx.path, _to_slash(ctx.url("/")), include_in_schema=False)
    else:
        app.router.routes.append(Mount(ctx.path, app=sub))
    app.state.wsplugin_admin = ctx
    return ctx


def _to_slash(target: str) -> Callable[[], Awaitable[RedirectResponse]]:
    async def redirect() -> RedirectResponse:
        return RedirectResponse(target, 307)

    return redirect

