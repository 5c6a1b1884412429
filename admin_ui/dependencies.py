"""FastAPI dependencies that authenticate a request for one mounted dashboard.

No ``from __future__ import annotations`` here: FastAPI reads these signatures at runtime,
and the user's dependency is a closure variable.
"""

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from admin_ui.auth import Principal, check_password, check_token, principal_from_user
from admin_ui.context import AdminContext
from admin_ui.guard import guarded
from admin_ui.redis_state import StoreUnavailable
from admin_ui.security import CSRF_HEADER, check_same_origin
from admin_ui.sessions import COOKIE, session_id

PrincipalDependency = Callable[..., Awaitable[Principal]]

bearer_scheme = HTTPBearer(auto_error=False, description="The admin token (operator or viewer)")

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
SESSIONS_UNAVAILABLE = (
    "session cookies cannot be checked while the session store (Redis) is unreachable; "
    "use an Authorization header"
)


def _basic(ctx: AdminContext, value: str) -> Principal | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return check_password(ctx.auth, username, password) if sep else None


def _from_header(ctx: AdminContext, header: str) -> Principal | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return check_token(ctx.auth, value.strip())
    if scheme.lower() == "basic":
        return _basic(ctx, value.strip())
    return None


async def authenticate(ctx: AdminContext, request: Request) -> Principal | None:
    """Credentials mode: an Authorization header (Bearer or Basic), else the session cookie.

    A header is a login attempt: throttled and counted (``admin_ui.guard``). A session
    cookie is not (it is an HMAC nobody can guess, and an expired one is no attack); it
    must not have been revoked (logged out).
    """
    header = request.headers.get("authorization")
    if header:
        scheme = header.partition(" ")[0].lower()
        kind = scheme if scheme in ("bearer", "basic") else "authorization"  # never the value
        return await guarded(ctx, request, kind, lambda: _from_header(ctx, header))
    cookie = request.cookies.get(COOKIE)
    return await session_principal(ctx, cookie) if cookie else None


async def session_principal(ctx: AdminContext, cookie: str) -> Principal | None:
    """The principal of a valid session cookie that was not revoked; 503 when the
    revocations cannot be read (a session is never accepted unchecked)."""
    who = ctx.sessions.read(cookie)
    if who is None:
        return None
    try:
        revoked = await ctx.revocations.revoked(session_id(who), who.expires)
    except StoreUnavailable:
        raise HTTPException(503, SESSIONS_UNAVAILABLE) from None
    return None if revoked else who


async def still_valid(ctx: AdminContext, who: Principal) -> bool:
    """Whether a session that was valid when a request began still is (not revoked since).
    Other principals are checked on every request; True for them."""
    if who.via != "session":
        return True
    try:
        return not await ctx.revocations.revoked(session_id(who), who.expires)
    except StoreUnavailable:
        return False


def principal_dependency(ctx: AdminContext) -> PrincipalDependency:
    """The dependency every admin route uses: the principal, or 401."""
    if ctx.auth.disabled:

        async def open_access() -> Principal:
            return Principal("anonymous", "operator", "open")

        return open_access
    if ctx.auth.dependency is not None:
        return _from_user_dependency(ctx.auth.dependency)

    async def from_credentials(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        principal = await authenticate(ctx, request)
        if principal is None:
            raise HTTPException(401, "authentication required", headers=UNAUTHORIZED)
        return principal

    return from_credentials


def _from_user_dependency(user_dependency: Callable[..., Any]) -> PrincipalDependency:
    async def from_dependency(user: Annotated[Any, Depends(user_dependency)]) -> Principal:
        if user is None:
            raise HTTPException(401, "authentication required", headers=UNAUTHORIZED)
        return principal_from_user(user)

    return from_dependency


def needs_csrf(request: Request, principal: Principal) -> bool:
    """Cookies are sent by the browser on its own; an Authorization header set by a script is
    not (a cross-site page cannot set it), so header-authenticated calls without cookies skip."""
    if "cookie" in request.headers:
        return True
    if principal.via in ("bearer", "basic"):
        return False
    return not (principal.via == "dependency" and "authorization" in request.headers)


def operator_dependency(ctx: AdminContext, principal: PrincipalDependency) -> PrincipalDependency:
    """For actions: an operator, a same-site request, and a valid CSRF token (else 403)."""

    async def require_operator(
        request: Request, who: Annotated[Principal, Depends(principal)]
    ) -> Principal:
        if not who.can_act:
            raise HTTPException(403, "operators only: this login can only view")
        check_same_origin(request)
        token = request.headers.get(CSRF_HEADER, "")
        if needs_csrf(request, who) and not ctx.sessions.check_csrf(who, token):
            raise HTTPException(403, "missing or wrong CSRF token")
        return who

    return require_operator
