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
import asyncio
import gc
import json
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
import tracemalloc
from collections import Counter
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


PROBE_DIR_ENV = "WSBENCH_PROBE_DIR"
"""Set by ``bench/idle_memory.py``: the directory where a server writes its heap probes."""
PROBE_FRAMES_ENV = "WSBENCH_PROBE_FRAMES"


def memory_probe(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """With ``WSBENCH_PROBE_DIR`` set: trace Python allocations from now on, and on
    ``SIGUSR1`` write (after a full collection) a tracemalloc snapshot
    (``snap-<k>.pickle``) and the live objects by type (``types-<k>.txt``: type, count,
    ``sys.getsizeof`` total), then ``done-<k>``. Without it, nothing. ``loop``: register
    the handler on that running loop (a server that never returns to Python while idle,
    like the raw one on uvloop, runs a plain signal handler only when woken)."""
    where = os.environ.get(PROBE_DIR_ENV)
    if not where:
        return
    tracemalloc.start(int(os.environ.get(PROBE_FRAMES_ENV, "12")))
    taken = [0]

    def probe(signum: int, frame: Any) -> None:
        k = taken[0]
        taken[0] += 1
        gc.collect()
        tracemalloc.take_snapshot().dump(os.path.join(where, f"snap-{k}.pickle"))
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            counts[name] += 1
            sizes[name] += sys.getsizeof(obj)
        with open(os.path.join(where, f"types-{k}.txt"), "w") as out:
            for name, count in counts.items():
                out.write(f"{name}\t{count}\t{sizes[name]}\n")
        open(os.path.join(where, f"done-{k}"), "w").close()

    if loop is not None:
        loop.add_signal_handler(signal.SIGUSR1, probe, signal.SIGUSR1, None)
    else:
        signal.signal(signal.SIGUSR1, probe)


LAG_FILE_ENV = "WSBENCH_LAG_FILE"
"""Set by ``bench/admin_dashboard.py``: where a server writes its event-loop lag."""
LAG_TICK = 0.005


STALL_ENV = "WSBENCH_STALL_MS"


class StallSampler:
    """What a stalled event loop was doing: a thread that, every 2 ms, looks at the loop's
    thread when the loop has not ticked for ``threshold`` seconds. Per stall it keeps how
    long it lasted (at least), how much CPU the loop's thread used in that time (much less
    than the stall: the thread was not running, the OS or the machine held it up) and the
    thread's Python stacks seen (none on top of the loop's ``run``: C code; a collection
    keeps the GIL, so it shows as the stack right after it). Bench only."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.beat = time.monotonic()
        self.beat_cpu = time.thread_time()
        self.episodes: list[dict[str, Any]] = []
        self._loop_thread = threading.get_ident()
        self._native_id = threading.get_native_id()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_thread = threading.get_ident()
        self._native_id = threading.get_native_id()
        self._task = loop.create_task(self._tick())
        threading.Thread(target=self._watch, name="stall-sampler", daemon=True).start()

    async def _tick(self) -> None:
        while True:
            self.beat, self.beat_cpu = time.monotonic(), time.thread_time()
            await asyncio.sleep(0.001)

    def _kernel_view(self) -> tuple[float, int]:
        """The loop thread's time waiting for a CPU (ms) and its page faults, so far."""
        base = f"/proc/self/task/{self._native_id}"
        with open(f"{base}/schedstat") as f:
            waited = int(f.read().split()[1]) / 1e6
        with open(f"{base}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return waited, int(fields[7]) + int(fields[9])  # minflt + majflt

    def _watch(self) -> None:
        clock = time.pthread_getcpuclockid(self._loop_thread)
        episode: dict[str, Any] | None = None
        calm = self._kernel_view()
        while True:
            time.sleep(0.002)
            beat, beat_cpu = self.beat, self.beat_cpu
            late = time.monotonic() - beat
            if late < self.threshold:
                episode = None
                calm = self._kernel_view()
                continue
            if episode is None or episode["beat"] != beat:
                episode = {"beat": beat, "stacks": []}
                self.episodes.append(episode)
            episode["wall_ms"] = round(1000 * late, 1)
            episode["cpu_ms"] = round(1000 * (time.clock_gettime(clock) - beat_cpu), 1)
            waited, faults = self._kernel_view()
            episode["runqueue_ms"] = round(waited - calm[0], 1)
            episode["faults"] = faults - calm[1]
            frame = sys._current_frames().get(self._loop_thread)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-10:]
                episode["stacks"].append(" <- ".join(
                    f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack)))

    def take(self) -> list[dict[str, Any]]:
        """The stalls seen since the last call."""
        episodes, self.episodes = self.episodes, []
        return [{k: v for k, v in e.items() if k != "beat"} for e in episodes]


class LagMonitor:
    """Event-loop lag and garbage-collection pauses of this process.

    A task sleeps ``LAG_TICK`` seconds over and over; how much later than asked it wakes is
    the time the loop was blocked (a slow callback, a collection). ``gc.callbacks`` time
    every collection by generation. ``SIGUSR2`` writes a summary of what was seen since
    the previous one to ``path`` (then ``path`` + ``.done``) and starts afresh (the first
    time after a full collection, so a phase's full collections are its own).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lags: list[float] = []
        self.collections: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        self._since = time.monotonic()
        self._cpu = time.process_time()
        self._writes = 0
        self.stalls: StallSampler | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        stall_ms = os.environ.get(STALL_ENV)
        self.stalls = StallSampler(float(stall_ms) / 1000) if stall_ms else None
        if self.stalls is not None:
            self.stalls.start(loop)
        gc.callbacks.append(self._on_gc)
        loop.add_signal_handler(signal.SIGUSR2, self.dump)
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, writes = loop.time(), self._writes
            await asyncio.sleep(LAG_TICK)
            if writes == self._writes:  # a sample across a summary measures the summary
                self.lags.append(max(0.0, loop.time() - before - LAG_TICK))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections[info["generation"]].append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, Any]:
        lags = sorted(self.lags)

        def pick(q: float) -> float:
            return 1000 * lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0

        seconds = time.monotonic() - self._since
        return {
            "seconds": seconds,
            "cpu": (time.process_time() - self._cpu) / seconds,  # of one core
            "samples": len(lags),
            "lag_max_ms": 1000 * lags[-1] if lags else 0.0,
            "lag_p99_ms": pick(0.99),
            "lag_p999_ms": pick(0.999),
            "over_20ms": sum(1 for lag in lags if lag > 0.020),
            "gc": {str(gen): {"count": len(times), "max_ms": 1000 * max(times, default=0.0),
                              "total_ms": 1000 * sum(times)}
                   for gen, times in self.collections.items()},
            "gc_objects": len(gc.get_objects()),
            "gc_frozen": gc.get_freeze_count(),
            "gc_threshold": gc.get_threshold(),
            "stalls": [] if self.stalls is None else self.stalls.take(),
        }

    def dump(self) -> None:
        summary = self.summary()
        if self._writes == 0:  # the end of the connection storm: start every phase without
            gc.collect()  # the growth it left pending (which would trigger a full collection)
        self.lags = []
        self.collections = {0: [], 1: [], 2: []}
        self._since = time.monotonic()
        self._cpu = time.process_time()
        self._writes += 1
        with open(self.path, "w") as out:
            json.dump(summary, out)
        open(f"{self.path}.done{self._writes}", "w").close()


def lag_monitor() -> LagMonitor | None:
    """A :class:`LagMonitor` when ``WSBENCH_LAG_FILE`` is set (start it on the loop); with
    ``WSBENCH_GC_THRESHOLD`` (``"700,10,10"``) the collector's thresholds are set too."""
    thresholds = os.environ.get("WSBENCH_GC_THRESHOLD")
    if thresholds:
        gc.set_threshold(*(int(t) for t in thresholds.split(",")))
    path = os.environ.get(LAG_FILE_ENV)
    return LagMonitor(path) if path else None


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
    memory_probe()
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
