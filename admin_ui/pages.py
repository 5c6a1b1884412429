"""The HTML pages: login, logout, the dashboard, and the package's own static files."""

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from admin_ui.assets import asset
from admin_ui.auth import Credential, Principal, check_password, check_token
from admin_ui.context import AdminContext
from admin_ui.dependencies import PrincipalDependency, authenticate
from admin_ui.guard import Throttled, client_address, guarded
from admin_ui.redis_state import StoreUnavailable
from admin_ui.security import SecureRoute, check_same_origin
from admin_ui.sessions import COOKIE, session_id
from admin_ui.urls import admin_base
from wsplugin.events import EVENT_KINDS

QUERY_TOKEN_REFUSED = (
    "Tokens in the URL query string (?token=) are refused: they end up in access logs. "
    "Use the form below, or a link ending in #token=…"
)
LOGOUT_FAILED = (
    "Logged out in this browser, but the session could not be revoked on the server: the "
    "session store (Redis) is unreachable. Log out again once it is back."
)

logger = logging.getLogger("wsplugin.admin")

MaybePrincipal = Callable[..., Awaitable[Principal | None]]


def maybe_principal(ctx: AdminContext, viewer: PrincipalDependency) -> MaybePrincipal:
    """Credentials mode: None instead of 401, so the page can redirect to the login form."""
    if not ctx.auth.uses_credentials:
        return viewer

    async def maybe(request: Request) -> Principal | None:
        return await authenticate(ctx, request)

    return maybe


def pages_router(ctx: AdminContext, viewer: PrincipalDependency) -> APIRouter:
    router = APIRouter(route_class=SecureRoute, include_in_schema=False)
    _dashboard(router, ctx, maybe_principal(ctx, viewer))
    _login(router, ctx)
    _static(router)
    return router


def _dashboard(router: APIRouter, ctx: AdminContext, maybe: MaybePrincipal) -> None:
    @router.get("/")
    async def dashboard(
        request: Request, who: Annotated[Principal | None, Depends(maybe)]
    ) -> Response:
        base = admin_base(request, "/")
        if who is None:
            return RedirectResponse(base + "/login", 303)
        context = {
            "base": base,
            "who": who,
            "csrf": ctx.sessions.csrf_token(who),
            "node": ctx.manager.node_id,
            "can_logout": who.via == "session",
            "event_kinds": sorted(EVENT_KINDS),
        }
        return ctx.templates.TemplateResponse(request, "dashboard.html", context)


def _login_form(
    ctx: AdminContext,
    request: Request,
    error: str = "",
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    context = {
        "base": admin_base(request, "/login"),
        "error": error,
        "tokens": any(isinstance(c, str) for c in (*ctx.auth.operators, *ctx.auth.viewers)),
        "passwords": any(isinstance(c, tuple) for c in (*ctx.auth.operators, *ctx.auth.viewers)),
    }
    return ctx.templates.TemplateResponse(
        request, "login.html", context, status_code=status, headers=headers
    )


def _logged_in(
    ctx: AdminContext, request: Request, who: Principal, credential: Credential
) -> Response:
    how = "with a token" if who.via == "bearer" else "with a password"
    ctx.audit.record(who, "login", who.name, how)
    base = admin_base(request, "/login")
    response = RedirectResponse(base + "/", 303)
    response.set_cookie(
        COOKIE,
        ctx.sessions.issue(who, credential),
        max_age=int(ctx.sessions.lifetime),
        path=base,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _check_form(
    ctx: AdminContext, request: Request, form: Any
) -> tuple[Principal, Credential] | None:
    """The token form or the password form; a filled one is a throttled login attempt.
    Returns who logged in and with which credential (the session is bound to it)."""
    token = str(form.get("token") or "")
    if token:
        check = partial(check_token, ctx.auth, token)
        who = await guarded(ctx, request, "form token", check)
        return None if who is None else (who, token)
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    if not username:
        return None
    check = partial(check_password, ctx.auth, username, password)
    who = await guarded(ctx, request, "form password", check)
    return None if who is None else (who, (username, password))


def _login(router: APIRouter, ctx: AdminContext) -> None:
    @router.get("/login")
    async def login_page(request: Request) -> Response:
        if not ctx.auth.uses_credentials:
            return RedirectResponse(admin_base(request, "/login") + "/", 303)
        if "token" in request.query_params:
            logger.warning("wsplugin admin: refused a token in the query string of %s (from %s)",
                           request.url.path, client_address(request))
            return _login_form(ctx, request, QUERY_TOKEN_REFUSED, 400)
        return _login_form(ctx, request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        check_same_origin(request)
        if not ctx.auth.uses_credentials:
            return RedirectResponse(admin_base(request, "/login") + "/", 303)
        try:
            found = await _check_form(ctx, request, await request.form())
        except Throttled as throttled:
            message = f"Too many failed logins. Try again in {throttled.retry_after} s."
            return _login_form(ctx, request, message, 429, throttled.headers)
        if found is None:
            return _login_form(ctx, request, "Wrong credentials.", 401)
        return _logged_in(ctx, request, *found)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        """Revoke the session on the server (every worker, with Redis), then drop the cookie."""
        check_same_origin(request)
        base = admin_base(request, "/logout")
        response: Response = RedirectResponse(base + "/login", 303)
        who = ctx.sessions.read(request.cookies.get(COOKIE, ""))
        if who is not None:
            try:
                await ctx.revocations.revoke(session_id(who), who.expires)
            except StoreUnavailable:
                response = PlainTextResponse(LOGOUT_FAILED, 503)
            else:
                ctx.audit.record(who, "logout", who.name, "session revoked")
        response.delete_cookie(COOKIE, path=base, httponly=True, samesite="strict")
        return response


def _static(router: APIRouter) -> None:
    @router.api_route("/static/{name}", methods=["GET", "HEAD"])
    async def static(name: str, request: Request) -> Response:
        """GET and HEAD, every answer with the security headers (``nosniff`` among them)."""
        found = asset(name)
        if found is None:
            return PlainTextResponse("Not Found", 404)
        return found.answer(request)
