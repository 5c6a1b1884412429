"""``install_ws_manager(app)``: one call mounts the rooms, the manager, health and admin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsplugin._fastpath import capture_server_send
from wsplugin.config import _UNSET, SlowConsumerPolicy, build_settings
from wsplugin.endpoint import ManagedEndpoint
from wsplugin.manager import WebSocketManager
from wsplugin.types import AuthenticateHook, AuthorizeHook, MessageHook

logger = logging.getLogger("wsplugin")


def install_ws_manager(
    app: Starlette,
    *,
    prefix: str = _UNSET,
    backend: str = _UNSET,
    authenticate: AuthenticateHook | None = _UNSET,
    authorize: AuthorizeHook | None = _UNSET,
    on_message: MessageHook | None = _UNSET,
    allowed_origins: Sequence[str] | None = _UNSET,
    max_message_bytes: int = _UNSET,
    max_queue_messages: int = _UNSET,
    max_queue_bytes: int = _UNSET,
    slow_consumer: SlowConsumerPolicy = _UNSET,
    max_rooms_per_connection: int = _UNSET,
    rate_limit: tuple[int, float] | None = _UNSET,
    heartbeat_interval: float = _UNSET,
    heartbeat_timeout: float = _UNSET,
    echo_to_sender: bool = _UNSET,
    coalesce: bool = _UNSET,
    admin_path: str | None = _UNSET,
    admin_auth: Any = _UNSET,
    health_path: str | None = _UNSET,
    redis_prefix: str = _UNSET,
    registry_ttl: float = _UNSET,
    fast_path: bool | Literal["auto"] = _UNSET,
    compression: bool | Literal["auto"] = _UNSET,
) -> WebSocketManager:
    """Install a :class:`WebSocketManager` on ``app`` and return it.

    Defaults (each also read from ``WSPLUGIN_<NAME>`` when the keyword is not given):
    ``prefix="/ws"``, ``backend="memory://"``, ``max_message_bytes=65536``,
    ``max_queue_messages=1000``, ``max_queue_bytes=4 MiB``, ``slow_consumer="close"``,
    ``max_rooms_per_connection=100``, ``rate_limit=(100, 50.0)``, ``heartbeat_interval=20``,
    ``heartbeat_timeout=20``, ``echo_to_sender=True``, ``coalesce=False``,
    ``admin_path="/ws-admin"``, ``health_path="/ws-health"``, ``redis_prefix="wsplugin"``,
    ``registry_ttl=15``, ``fast_path="auto"`` (``False``: every frame through the ASGI
    ``send``, see :mod:`wsplugin.writer`), ``compression="auto"`` (where a client negotiated
permessage-deflate, each message is compressed once for all of them; ``False``: send them
uncompressed frames, see :mod:`wsplugin._deflate`). Bad values raise ``ValueError`` here, not at
    the first connection.
    """
    options = {k: v for k, v in locals().items() if k != "app" and v is not _UNSET}
    if getattr(app.state, "ws_manager", None) is not None:
        raise RuntimeError(
            "install_ws_manager() was already called on this app; it installs one manager per "
            "app (use app.state.ws_manager or Depends(get_ws_manager) to reach it)"
        )
    settings = build_settings(options)
    manager = WebSocketManager(settings)
    app.state.ws_manager = manager
    app.router.routes.append(
        WebSocketRoute(f"{settings.prefix}/{{room}}", ManagedEndpoint(manager), name="wsplugin")
    )
    if settings.health_path is not None:
        app.router.routes.append(_health_route(settings.health_path, manager))
    _wrap_lifespan(app, manager)
    if not capture_server_send(app):  # the app already started: the ASGI path is used
        logger.debug("wsplugin: app already started, websocket fast path off")
    if settings.admin_path is not None:
        _mount_admin(app, manager, settings.admin_path, settings.admin_auth)
    return manager


def _health_route(path: str, manager: WebSocketManager) -> Route:
    async def health(request: Request) -> JSONResponse:
        report = await manager.health()
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    return Route(path, health, methods=["GET"], name="wsplugin_health")


def _wrap_lifespan(app: Starlette, manager: WebSocketManager) -> None:
    """Start the manager before the app's own lifespan and stop it after."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        await manager.start()
        try:
            async with inner(app_) as state:
                yield state
        finally:
            await manager.stop()

    app.router.lifespan_context = lifespan


def _mount_admin(app: Starlette, manager: WebSocketManager, path: str, auth: Any) -> None:
    try:
        from admin_ui import mount_admin  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # the dashboard package is part of the distribution
        logger.warning("wsplugin: admin_ui is not available; the dashboard is off")
        return
    mount_admin(app, manager, path=path, auth=auth)
