"""A credential check for one request, throttled (429) and logged, never the secret.

The failures count in Redis for the whole cluster when the dashboard has a
``shared_throttle`` (the Redis backend), else in this process's ``Throttle``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import HTTPException, Request

from admin_ui.auth import Principal
from admin_ui.context import AdminContext
from admin_ui.throttle import retry_header

logger = logging.getLogger("wsplugin.admin")

Check = Callable[[], Principal | None]


class Throttled(HTTPException):
    """429 Too Many Requests, with ``Retry-After``."""

    def __init__(self, wait: float) -> None:
        headers = retry_header(wait)
        detail = f"too many failed logins: retry after {headers['Retry-After']} s"
        super().__init__(429, detail, headers=headers)
        self.retry_after = int(headers["Retry-After"])


def client_address(request: Request) -> str:
    """The peer (uvicorn's proxy-headers middleware puts a trusted proxy's client here)."""
    return request.client.host if request.client else "unknown"


async def retry_after(ctx: AdminContext, address: str) -> float:
    if ctx.shared_throttle is None:
        return ctx.throttle.retry_after(address)
    return await ctx.shared_throttle.retry_after(ctx.throttle, address)


async def count_failure(ctx: AdminContext, address: str) -> float:
    if ctx.shared_throttle is None:
        return ctx.throttle.failed(address)
    return await ctx.shared_throttle.failed(ctx.throttle, address)


async def guarded(
    ctx: AdminContext, request: Request, kind: str, check: Check
) -> Principal | None:
    """Run ``check`` unless the address is throttled; count and log a failure.

    Raises ``Throttled`` before the check (locked address, or an alert and an address
    with recent failures) or after a failure that must be answered 429.
    """
    address = client_address(request)
    wait = await retry_after(ctx, address)
    if wait > 0:
        refused = Throttled(wait)
        _log("login refused (throttled %s s)", address, request, kind, refused.retry_after)
        raise refused
    who = check()
    if who is not None:
        return who
    wait = await count_failure(ctx, address)
    if wait <= 0:
        _log("failed login", address, request, kind)
        return None
    throttled = Throttled(wait)
    _log("failed login, now throttled %s s", address, request, kind, throttled.retry_after)
    raise throttled


def _log(what: str, address: str, request: Request, kind: str, *args: object) -> None:
    logger.warning(
        "wsplugin admin: " + what + " from %s on %s %s (%s)",
        *args, address, request.method, request.url.path, kind,
    )
