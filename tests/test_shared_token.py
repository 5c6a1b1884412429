"""One generated admin token per server start: the file dance, and real uvicorn workers."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from admin_ui.shared_token import (
    forget_stale,
    is_manager,
    private_dir,
    publish,
    shared_token,
    start_time,
)
from tests.support import subprocess_server

LINK = re.compile(r"/ws-admin/login#token=([A-Za-z0-9_-]+)")


def test_the_first_publisher_wins_and_the_others_read_it(tmp_path: Path) -> None:
    directory = private_dir(str(tmp_path))
    assert directory is not None and (directory.stat().st_mode & 0o777) == 0o700
    token, first = publish(directory, "token-1-2")
    again, second = publish(directory, "token-1-2")
    assert first and not second and again == token and len(token) >= 32
    assert (directory / "token-1-2").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["token-1-2"]  # no drafts left


def test_a_directory_that_is_not_private_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / f"wsplugin-admin-{os.getuid()}"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert private_dir(str(tmp_path)) is None
    shared.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    shared.symlink_to(elsewhere)
    assert private_dir(str(tmp_path)) is None


def test_files_of_managers_that_are_gone_are_removed(tmp_path: Path) -> None:
    directory = private_dir(str(tmp_path))
    assert directory is not None
    alive = f"token-{os.getpid()}-{start_time(os.getpid())}"
    reused = f"token-{os.getpid()}-1"  # our pid, but another start time
    for name in (alive, reused, "token-999999999-5"):
        publish(directory, name)
    forget_stale(directory)
    assert [p.name for p in directory.iterdir()] == [alive]


def test_a_single_process_gets_a_fresh_token_each_time() -> None:
    assert not is_manager(os.getppid())  # pytest is not started by uvicorn or gunicorn
    one, two = shared_token(), shared_token()
    assert one.first and two.first and one.token != two.token and one.manager_pid is None


def read_link(log: Path, timeout: float = 30.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if LINK.search(text):
            return LINK.findall(text)[0], text
        time.sleep(0.1)
    raise AssertionError(f"no login link in the log: {log.read_text()}")


async def worker_accepts(base: str, token: str) -> int:
    """On one new connection: which worker it is, and that it accepts the token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        pid = (await http.get("/pid")).json()["pid"]
        me = await http.get("/ws-admin/api/me", headers=headers)
        assert me.status_code == 200, (pid, me.text)
        assert me.json()["role"] == "operator"
        assert (await http.get("/ws-admin/api/me")).status_code == 401
        return int(pid)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_uvicorn_workers_accept_the_one_printed_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WSPLUGIN_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("WSPLUGIN_ADMIN_SECRET", raising=False)
    log = tmp_path / "uvicorn.log"
    env = {"TMPDIR": str(tmp_path)}
    with (
        log.open("w") as sink,
        subprocess_server("tests.apps.pid_app:app", workers=2, env=env, stderr=sink) as (_, port),
    ):
        token, _ = read_link(log)
        base = f"http://127.0.0.1:{port}"
        pids: set[int] = set()
        for _ in range(20):
            pids.update(await asyncio.gather(*(worker_accepts(base, token) for _ in range(4))))
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids
        _, text = read_link(log)
        assert len(LINK.findall(text)) == 1, text  # only the first worker printed it
        assert "every worker of this server start shares it" in text
