"""Is this app one of several worker processes? The memory backend must say so loudly.

With ``backend="memory://"`` every worker has its own rooms: a broadcast reaches only the
clients of the worker that made it, and nothing fails. :func:`warn_if_memory_shared` logs a
WARNING at start-up when several workers are detected, from (first match wins):

1. ``WEB_CONCURRENCY`` (read by uvicorn and gunicorn as the default worker count);
2. ``GUNICORN_CMD_ARGS`` with ``-w N`` / ``--workers N``;
3. the server's command line, which a worker shares with its supervisor (gunicorn forks,
   uvicorn and hypercorn spawn with the parent's ``sys.argv``): ``--workers N`` for uvicorn,
   hypercorn, granian, and also ``-w N`` for gunicorn and hypercorn;
4. the parent process's command line (``/proc/<ppid>/cmdline``) when it is one of those
   servers, for a worker started another way.

A worker count set only in a gunicorn config file is not seen: set ``WEB_CONCURRENCY`` too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

logger = logging.getLogger("wsplugin")

SERVERS = ("uvicorn", "gunicorn", "hypercorn", "granian")
SHORT_FLAG = ("gunicorn", "hypercorn")
"""Servers whose ``-w`` means workers."""


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def workers_in_argv(argv: Sequence[str]) -> int:
    """The worker count on a server's command line (0: not a server, or not given)."""
    server = _server_name(argv)
    if server is None:
        return 0
    flags = ("--workers", "-w") if server in SHORT_FLAG else ("--workers",)
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in flags:
            if eq:
                return _count(value)
            return _count(argv[i + 1]) if i + 1 < len(argv) else 0
        if "-w" in flags and arg.startswith("-w") and arg[2:].isdigit():
            return int(arg[2:])
    return 0


def _server_name(argv: Sequence[str]) -> str | None:
    """``uvicorn`` for ``.../bin/uvicorn`` or ``python -m uvicorn`` (``uvicorn/__main__.py``)."""
    for arg in argv[:3]:
        parts = arg.replace("\\", "/").split("/")
        name = parts[-2] if parts[-1] == "__main__.py" and len(parts) > 1 else parts[-1]
        for server in SERVERS:
            if name == server or name.startswith(server + "."):
                return server
    return None


def _parent_argv() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:  # not Linux, or the parent is gone
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def detect_workers(
    env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None,
    parent_argv: Sequence[str] | None = None,
) -> tuple[int, str]:
    """``(count, how it was found)``; ``(1, "")`` when nothing says there are several."""
    env = os.environ if env is None else env
    concurrency = _count(env.get("WEB_CONCURRENCY", ""))
    if concurrency > 1:
        return concurrency, f"WEB_CONCURRENCY={concurrency}"
    gunicorn_args = env.get("GUNICORN_CMD_ARGS", "").split()
    count = workers_in_argv(["gunicorn", *gunicorn_args])
    if count > 1:
        return count, f"GUNICORN_CMD_ARGS={env['GUNICORN_CMD_ARGS']!r}"
    for line, where in ((argv, "command line"), (parent_argv, "parent's command line")):
        if line is None:
            line = sys.argv if where == "command line" else _parent_argv()
        count = workers_in_argv(line)
        if count > 1:
            return count, f"{_server_name(line)} --workers {count} ({where})"
    return 1, ""


def warn_if_memory_shared(backend: str) -> bool:
    """Log a WARNING if ``backend`` is in-process and several workers serve the app."""
    if not backend.startswith("memory"):
        return False
    count, how = detect_workers()
    if count <= 1:
        return False
    logger.warning(
        "wsplugin: backend=%r with %d worker processes (%s): each worker has its own rooms, "
        "so a broadcast reaches only the clients of the worker that sent it. Use "
        'backend="redis://..." (or WSPLUGIN_BACKEND=redis://host:6379/0) or a single worker.',
        backend, count, how,
    )
    return True
