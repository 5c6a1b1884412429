"""wsplugin: ``install_ws_manager(app, ...)`` under the shared uvicorn settings.

The managed endpoint ``/ws/{room}`` speaks the JSON envelope protocol. Clients that connect
with ``?batch=1`` opt in to coalesced frames (several messages, newline-separated, in one
text frame); ``--coalesce`` turns coalescing on in the manager too. ``--admin`` mounts the
admin dashboard at ``/ws-admin`` without auth (for the admin-overhead benchmark).
``--typed`` gives the benchmark's room a small pydantic model for what clients publish and
what members receive (``rooms={"bench*": RoomOptions(publish=Stamp, message=Stamp)}``): the
cost of typed messages, validated once per publish. ``--stats-route`` answers
``GET /bench-stats?room=<name>`` with the manager's counters (``stats()``: drops, slow
closes...), handshakes accepted, closes by code, the named rooms' members and drops and the
garbage collections so far (``bench/soak.py`` reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastapi import FastAPI

from bench.servers._common import lag_monitor, parser, run_uvicorn


def manager_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``install_ws_manager`` from the command line."""
    options: dict[str, Any] = {
        "admin_path": "/ws-admin" if args.admin else None,
        "rate_limit": None,
        "client_publish": True,  # the load generator publishes from clients
        "coalesce": args.coalesce,
        "backend": args.backend,
    }
    if args.admin:
        options["admin_auth"] = False
    if args.max_queue_messages:
        options["max_queue_messages"] = args.max_queue_messages
    if args.compression != "auto":
        options["compression"] = args.compression == "true"
    if args.typed:
        options["rooms"] = {"bench*": typed_room()}
    if args.other_presence:  # presence for other rooms: the benchmark's room stays plain
        from wsplugin import Presence

        options["presence"] = {"other-*": Presence()}
    return options


def typed_room() -> Any:
    """The benchmark room with a small model: the load generator's data is a string
    (``#<seq>:<t_ns>#<padding>``), so the model is a constrained string."""
    from pydantic import Field, RootModel

    from wsplugin import RoomOptions

    class Stamp(RootModel[str]):
        root: str = Field(min_length=1, max_length=65536, pattern=r"^#")

    return RoomOptions(client_publish=True, publish=Stamp, message=Stamp)


@contextlib.asynccontextmanager
async def bench_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Starts the event-loop lag monitor when ``WSBENCH_LAG_FILE`` is set."""
    monitor = lag_monitor()
    if monitor is not None:
        monitor.start(asyncio.get_running_loop())
    yield


def build_app(args: argparse.Namespace) -> FastAPI:
    from wsplugin import install_ws_manager

    app = FastAPI(lifespan=bench_lifespan)
    manager = install_ws_manager(app, **manager_options(args))
    if args.stats_route:
        app.router.routes.append(stats_route(manager))
    return app


def stats_route(manager: Any) -> Any:
    """``GET /bench-stats?room=a&room=b``: what the manager counted, and the garbage
    collector's collections per generation, as JSON."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def stats(request: Request) -> JSONResponse:
        tally = manager.tally
        return JSONResponse({
            "stats": await manager.stats(),
            "accepted": tally.accepted,
            "refused": tally.refused,
            "closes": tally.closes,
            "rooms": manager.room_stats(request.query_params.getlist("room")),
            "gc": {"collections": [g["collections"] for g in gc.get_stats()],
                   "counts": gc.get_count(), "thresholds": gc.get_threshold()},
        })

    return Route("/bench-stats", stats, methods=["GET"])


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--coalesce", action="store_true", help="coalesce=True in install_ws_manager")
    p.add_argument("--admin", action="store_true", help="mount the admin at /ws-admin, no auth")
    p.add_argument("--backend", default="memory://")
    p.add_argument("--max-queue-messages", type=int, default=0, help="0 = the default")
    p.add_argument("--compression", choices=("auto", "true", "false"), default="auto")
    p.add_argument("--typed", action="store_true",
                   help="a small pydantic model for the benchmark room's messages")
    p.add_argument("--other-presence", action="store_true",
                   help="presence configured for rooms other-* (not the benchmark's room)")
    p.add_argument("--stats-route", action="store_true",
                   help="GET /bench-stats: the manager's counters as JSON")
    args = p.parse_args()
    run_uvicorn(build_app(args), args)


if __name__ == "__main__":
    main()
