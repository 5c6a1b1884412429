"""A node of a presence test cluster: users from the ``x-user`` header, ``chat-*`` tracked.

Configured from the environment (``WSPLUGIN_BACKEND``, ``WSPLUGIN_REDIS_PREFIX``,
``WSPLUGIN_REGISTRY_TTL``, ``WSPLUGIN_PRESENCE``...), so several processes form a cluster.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from wsplugin import User, install_ws_manager


def by_header(websocket: Any) -> Any:
    user = websocket.headers.get("x-user")
    return object() if user is None else User(user, {"name": user.title()})


app = FastAPI()
manager = install_ws_manager(app, admin_path=None, authenticate=by_header)
