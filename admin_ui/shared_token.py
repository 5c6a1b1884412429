"""One generated admin token per server start, shared by every worker of a process manager.

Without ``WSPLUGIN_ADMIN_TOKEN`` each process would generate its own token, valid on that
worker only. When our parent is a process manager (uvicorn's ``--workers`` supervisor, its
``--reload`` supervisor, a gunicorn arbiter), the first worker writes a fresh token to a file
named after the parent's pid and start time (from ``/proc``) in a private 0700 directory
under the temp dir; the others read it. Publication is atomic (write a private file, then
``link`` it to the shared name: exactly one link succeeds, and it is complete).
Anywhere else (a single process, no ``/proc``) every process gets a fresh token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANAGERS = ("uvicorn", "gunicorn")
PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class SharedToken:
    token: str
    first: bool  # this process generated it (and should print the login URL)
    manager_pid: int | None = None  # the process manager whose workers share it


def new_token() -> str:
    return secrets.token_urlsafe(24)


def start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot): unique with the pid."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def is_manager(pid: int) -> bool:
    """Whether ``pid`` runs uvicorn or gunicorn (the supervisor of our worker)."""
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    words = [os.path.basename(part) for part in cmdline.decode(errors="replace").split("\0")]
    return any(manager in word for word in words[:4] for manager in MANAGERS)


def private_dir(base: str | None = None) -> Path | None:
    """``<tmp>/wsplugin-admin-<uid>``, created 0700; None if it is not ours and private."""
    path = Path(base or tempfile.gettempdir()) / f"wsplugin-admin-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    return path if mine and stat.S_IMODE(info.st_mode) == 0o700 else None


def publish(directory: Path, name: str) -> tuple[str, bool]:
    """The token in ``directory/name``: ours, newly written (True), or the one there."""
    target = directory / name
    draft = directory / f".{name}.{os.getpid()}"
    token = new_token()
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    try:
        os.link(draft, target)
        return token, True
    except FileExistsError:
        return target.read_text().strip(), False
    finally:
        draft.unlink()


def forget_stale(directory: Path) -> None:
    """Remove the files of managers that are gone (pid dead, or reused by another start)."""
    for entry in directory.glob("token-*-*"):
        _, pid, started = entry.name.split("-", 2)
        if not pid.isdigit() or start_time(int(pid)) != started:
            with contextlib.suppress(OSError):
                entry.unlink()


def shared_token(base: str | None = None) -> SharedToken:
    """The generated token of this server start (see the module docstring)."""
    parent = os.getppid()
    started = start_time(parent)
    if started is None or not is_manager(parent):
        return SharedToken(new_token(), first=True)
    directory = private_dir(base)
    if directory is None:
        return SharedToken(new_token(), first=True)
    token, first = publish(directory, f"token-{parent}-{started}")
    if first:
        forget_stale(directory)
    return SharedToken(token, first=first, manager_pid=parent)
