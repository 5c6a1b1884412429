"""Processes of one run: a fresh server pinned to one core, the load generator on another."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from bench.plan import ServerSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to one core (None: no pinning)."""
    if cpu is None:
        return None
    cores = {cpu}
    return lambda: os.sched_setaffinity(0, cores)


def child_env(root: str = ROOT) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


class Server:
    """A running benchmark server (see :func:`server_process`)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, room: str = "bench") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{room}"

    def crashed(self) -> bool:
        """True if the server exited on its own (it must live until we stop it)."""
        return self.proc.poll() is not None

    def log_tail(self, limit: int = 2000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]


@contextlib.contextmanager
def server_process(spec: ServerSpec, extra: tuple[str, ...], cpu: int | None) -> Iterator[Server]:
    """Start ``spec`` fresh on a free port, pinned to ``cpu``; SIGTERM it at the end."""
    port = free_port()
    root = spec.root or ROOT
    script = os.path.join(root, "bench", "servers", spec.script)
    cmd = [sys.executable, script, "--port", str(port), *spec.args, *extra]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=child_env(root), stdout=log, stderr=log, preexec_fn=pinned(cpu)
        )
        server = Server(proc, port, log)
        try:
            wait_port(port, proc)
            yield server
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def scenario_args(scenario: dict[str, Any]) -> list[str]:
    """Command-line flags of ``bench/loadgen.py`` for a scenario dict."""
    out: list[str] = []
    for key, value in scenario.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    return out


def loadgen_command(url: str, scenario: dict[str, Any], server_pid: int) -> list[str]:
    cmd = [sys.executable, os.path.join(ROOT, "bench", "loadgen.py"), url]
    return [*cmd, *scenario_args(scenario), "--server-pid", str(server_pid)]


def run_loadgen(
    url: str, scenario: dict[str, Any], server_pid: int, cpu: int | None
) -> dict[str, Any]:
    """Run ``bench/loadgen.py`` in its own process (pinned to ``cpu``) and parse its JSON."""
    cmd = loadgen_command(url, scenario, server_pid)
    timeout = float(scenario.get("timeout", 180.0)) + 30
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=child_env(), capture_output=True, timeout=timeout,
            preexec_fn=pinned(cpu), check=False,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"load generator timed out after {timeout:.0f}s"}
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.decode(errors="replace")[-1500:]
        return {"ok": False, "error": f"load generator exited {done.returncode}: {tail}"}
    return result


class GatedLoadgen:
    """``bench/loadgen.py`` with ``gate=True`` in its own process (pinned to ``cpu``): it
    connects, says ready (:meth:`ready`), runs its measured part when told (:meth:`go`),
    reports (:meth:`result`) and keeps its connections until :meth:`end`. Several side by
    side start together: ``bench/soak.py``."""

    def __init__(self, url: str, scenario: dict[str, Any], server_pid: int,
                 cpu: int | None) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by end()
        self.proc = subprocess.Popen(
            loadgen_command(url, {**scenario, "gate": True}, server_pid), cwd=ROOT,
            env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            preexec_fn=pinned(cpu),
        )

    def ready(self) -> None:
        """Wait until its clients are connected (RuntimeError if it failed instead)."""
        line = self._line()
        if line != "ready":
            raise RuntimeError(f"load generator not ready: {line[:500]} {self.log_tail()}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        """Its result line (it still holds its connections)."""
        line = self._line()
        try:
            result: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": f"load generator said {line[:500]!r}: "
                                          f"{self.log_tail()}"}
        return result

    def end(self) -> None:
        """Let it close its connections and exit."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()

    def log_tail(self, limit: int = 1500) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode(errors="replace").strip()
