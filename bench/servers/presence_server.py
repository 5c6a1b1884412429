"""wsplugin with users from ``?user=``: built-in presence, or the example's old one.

``--presence builtin`` configures ``presence={"bench*": Presence(grace=...)}``;
``--presence old`` instead runs what the example chat did by hand before presence existed
(one ``broadcast`` per join and per leave, from the manager's events); ``--presence none``
neither. ``--other-presence`` configures presence only for rooms named ``other-*`` (a plain
room must pay nothing for a feature configured for other rooms).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastapi import FastAPI

from bench.servers._common import parser, run_uvicorn


def user_from_query(websocket: Any) -> Any:
    from wsplugin import User

    user = websocket.query_params.get("user")
    return object() if user is None else User(user, {"name": user})


class OldPresence:
    """The example chat's hand-written presence: a broadcast per join and per leave."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.rooms: dict[str, set[str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Any) -> None:
        conn_id = event.connection_id
        if conn_id is None or event.node != self.manager.node_id:
            return
        if event.kind == "joined" and event.room is not None:
            self.rooms.setdefault(conn_id, set()).add(event.room)
            self.announce(event.room, "joined", event.identity)
        elif event.kind == "disconnected":
            for room in sorted(self.rooms.pop(conn_id, ())):
                self.announce(room, "left", event.identity)

    def announce(self, room: str, what: str, name: str | None) -> None:
        data = {"kind": "presence", "event": what, "name": name}
        task = asyncio.get_running_loop().create_task(self._send(room, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, room: str, data: Any) -> None:
        await self.manager.broadcast(room, data)


def build_app(mode: str, grace: float, backend: str, other: bool) -> FastAPI:
    from wsplugin import Presence, install_ws_manager

    options: dict[str, Any] = {"admin_path": None, "rate_limit": None, "backend": backend,
                               "client_publish": True, "authenticate": user_from_query}
    if mode == "builtin":
        options["presence"] = {"bench*": Presence(grace=grace)}
    if other:
        options["presence"] = {"other-*": Presence(grace=grace)}
    app = FastAPI()
    manager = install_ws_manager(app, **options)
    if mode == "old":
        manager.events.subscribe(OldPresence(manager))
    return app


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--presence", choices=("builtin", "old", "none"), default="builtin")
    p.add_argument("--other-presence", action="store_true")
    p.add_argument("--grace", type=float, default=5.0)
    p.add_argument("--backend", default="memory://")
    args = p.parse_args()
    run_uvicorn(build_app(args.presence, args.grace, args.backend, args.other_presence), args)


if __name__ == "__main__":
    main()
