"""``install_ws_manager(app)``: one call mounts the rooms, the manager, health and admin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsplugin.asyncapi.routes import asyncapi_routes
from wsplugin.client_script import client_routes
from wsplugin.config import build_settings, settings_keywords
from wsplugin.delivery.uvicorn_writer import capture_server_send
from wsplugin.endpoint.managed import ManagedEndpoint
from wsplugin.manager import WebSocketManager

logger = logging.getLogger("wsplugin")


@settings_keywords
def install_ws_manager(app: Starlette, **options: Any) -> WebSocketManager:
    """Install a :class:`WebSocketManager` on ``app`` and return it.

    Every keyword (listed below, declared once in :class:`wsplugin.config.Settings`) is also
    read from ``WSPLUGIN_<NAME>`` when it is not given; hooks and objects are keywords only.
    Bad values raise ``ValueError`` here, not at the first connection; an unknown keyword is
    a ``TypeError``.
    """
    if getattr(app.state, "ws_manager", None) is not None:
        raise RuntimeError(
            "install_ws_manager() was already called on this app; it installs one manager per "
            "app (use app.state.ws_manager or Depends(get_ws_manager) to reach it)"
        )
    settings = build_settings(options)
    manager = WebSocketManager(settings)
    app.state.ws_manager = manager
    managed = WebSocketRoute(f"{settings.prefix}/{{room}}", ManagedEndpoint(manager, app),
                             name="wsplugin")
    app.router.routes.append(managed)
    app.router.routes.extend(client_routes(settings.prefix))  # the browser client
    app.router.routes.extend(asyncapi_routes(manager))  # AsyncAPI document and page
    if settings.health_path is not None:
        app.router.routes.append(_health_route(settings.health_path, manager))
    if settings.metrics_path is not None:  # Prometheus, optional extra wsplugin[metrics]
        from wsplugin.metrics import metrics_route

        app.router.routes.append(metrics_route(settings.metrics_path, manager,
                                               settings.metrics_token))
    _wrap_lifespan(app, manager)
    if not capture_server_send(app, managed):  # the app already started: the ASGI path is used
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
