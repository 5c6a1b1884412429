"""FastAPI dependencies: ``Depends(get_ws_manager)`` or the ``WSManager`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from wsplugin.manager import WebSocketManager


def get_ws_manager(connection: HTTPConnection) -> WebSocketManager:
    """The app's manager; works in HTTP and websocket routes."""
    manager = getattr(connection.app.state, "ws_manager", None)
    if not isinstance(manager, WebSocketManager):
        raise RuntimeError("no WebSocketManager on this app: call install_ws_manager(app) first")
    return manager


WSManager = Annotated[WebSocketManager, Depends(get_ws_manager)]
