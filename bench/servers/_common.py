"""What every benchmark server shares: arguments, the listening socket, uvicorn settings.

Every server listens on a socket made here, with ``SO_SNDBUF`` set *before* ``listen()``:
Linux copies the listener's buffer sizes (and the "user set it" lock) to every accepted
socket, so each accepted connection has the same small kernel send buffer (64 KiB asked,
128 KiB effective since the kernel doubles it) whatever the server library does. uvicorn
receives it through ``Server.run(sockets=[...])`` and the raw websockets server through
``serve(..., sock=...)``.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNDBUF = 64 * 1024
BACKLOG = 4096

# The same for every uvicorn-based server, in every run.
UVICORN_SETTINGS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": "websockets-sansio",
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
}


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every server accepts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--sndbuf", type=int, default=SNDBUF, help="SO_SNDBUF of every socket, 0 = OS")
    p.add_argument("--ws", default=UVICORN_SETTINGS["ws"],
                   help="uvicorn's websocket protocol (websockets: the legacy one, where no "
                        "wsplugin fast path applies)")
    p.add_argument("--server", choices=("uvicorn", "hypercorn"), default="uvicorn",
                   help="hypercorn: no wsplugin fast path applies (same socket, uvloop)")
    return p


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (5,000+ connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def listen_socket(host: str, port: int, sndbuf: int) -> socket.socket:
    """A listening TCP socket whose accepted sockets inherit ``SO_SNDBUF = sndbuf``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def run_uvicorn(app: Any, args: argparse.Namespace) -> None:
    """Serve ``app`` on a socket from :func:`listen_socket`: with the shared uvicorn
    settings, or with hypercorn (``--server hypercorn``) on uvloop at its defaults."""
    raise_fd_limit()
    sock = listen_socket(args.host, args.port, args.sndbuf)
    if getattr(args, "server", "uvicorn") == "hypercorn":
        run_hypercorn(app, sock)
        return
    import uvicorn

    config = uvicorn.Config(app, **{**UVICORN_SETTINGS, "ws": args.ws})
    uvicorn.Server(config).run(sockets=[sock])


def run_hypercorn(app: Any, sock: socket.socket) -> None:
    """hypercorn's own protocol (wsproto inside, permessage-deflate accepted), one process."""
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.backlog = BACKLOG
    uvloop.run(serve(app, config))


def add_root_to_path() -> None:
    """Let ``python bench/servers/x.py`` import ``wsplugin`` and ``bench`` from the checkout."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
