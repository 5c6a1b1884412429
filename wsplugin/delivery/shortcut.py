"""The managed route's shortcut past the framework's own layers, for idle memory.

An open websocket keeps the whole chain of ASGI calls that reached its endpoint suspended
for its lifetime: every layer's coroutine frame and what it allocated (FastAPI's
``AsyncExitStack``, Starlette's exception wrapper, the router's scope updates). For the
managed endpoint that is ~4-5.5 KB per idle connection spent on layers that do nothing for
it: its endpoint handles every exception itself, and only HTTP uses the exit stack and the
body limit. So the websocket handshake of the managed route is dispatched to the route
directly, from the innermost user-middleware position (every middleware of the app still
sees it, in order) or, when the app has no middleware of its own, from the outermost one.

Routing is the router's own: its routes are matched in order and the shortcut is taken
only when the first full match is the managed route; the scope gets what the router would
set (``router``, ``endpoint``, ``path_params``). When FastAPI's request telemetry is on
(``fastapi.telemetry`` in the scope) the ordinary path is taken, so the route is reported;
so it is when the server's ``send`` is not a coroutine function (granian's is a native
awaitable, which the framework's own layers turn into one: the writers step coroutines).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Scope

TELEMETRY_KEY = "fastapi.telemetry"


class Shortcut:
    """The managed route of one app, and the router that would find it."""

    __slots__ = ("app", "route", "router")

    def __init__(self, router: Any, route: WebSocketRoute) -> None:
        self.router = router
        self.route = route
        self.app: ASGIApp = route.app

    def app_for(self, scope: Scope) -> ASGIApp | None:
        """The managed route's app if the router would pick the route for this websocket
        ``scope`` (whose routing keys are then set), else ``None`` (the scope is left as
        it is). A ``WebSocketRoute``'s ``handle`` only awaits its ``app``: calling the app
        saves that frame too."""
        if TELEMETRY_KEY in scope:
            return None
        for route in self.router.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                if route is not self.route:
                    return None
                scope.update(child_scope)
                scope.setdefault("router", self.router)
                return self.app
        return None
