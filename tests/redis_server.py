"""Real redis-server processes for the tests (never a fake).

- ``redis_url`` (session): ``REDIS_URL`` if set, else a private ``redis-server`` on a free
  port (``--save '' --appendonly no``), stopped by its PID at the end of the session.
- ``redis_prefix`` (function): a key prefix unique to this run and this test.
- ``redis_factory`` (function): private servers for fault tests (kill, restart, CLIENT KILL).

Without a ``redis-server`` binary the Redis tests skip with the reason, except in CI
(``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support import free_port, wait_port

RUN_ID = uuid.uuid4().hex[:8]


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the Redis tests must run)")
    pytest.skip(reason)


class RedisServer:
    """One ``redis-server`` process on a fixed port that can be killed and restarted."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="wsplugin-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, 10.0)
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL by PID: the server vanishes without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port (waits until the port is free to bind)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def client(self) -> redis.Redis:
        """A synchronous client for the test's own commands (CLIENT KILL, KEYS...)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        _missing("redis-server not found on PATH or at /usr/bin/redis-server")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = find_redis_server()
    if binary is None:
        _missing("redis-server not found on PATH or at /usr/bin/redis-server (or set REDIS_URL)")
    assert binary is not None
    server = RedisServer(binary).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this run and this test, so runs and tests never collide."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"wsplugin-test-{RUN_ID}-{name}-{uuid.uuid4().hex[:6]}"


class RedisFactory:
    """``redis_factory()`` starts a private server; all are stopped after the test."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.servers: list[RedisServer] = []

    def __call__(self) -> RedisServer:
        server = RedisServer(self.binary).start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


@pytest.fixture
def redis_factory(redis_binary: str) -> Iterator[RedisFactory]:
    factory = RedisFactory(redis_binary)
    try:
        yield factory
    finally:
        factory.close()
