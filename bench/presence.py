"""Presence against the example's old hand-written presence and against plain rooms.

    python bench/presence.py                       # about 2 minutes
    python bench/presence.py --members 500 --cycles 200

1. **Mass reconnect**: ``--members`` users are in one room with ``--observers`` more; every
   member disconnects and reconnects at once (within the grace period). Counted per
   observer (a member who stayed) and per reconnecting member: frames and bytes received
   until the room is quiet. Built-in presence (``presence={"bench*": Presence()}``) against
   the example chat's old presence (one ``broadcast`` per join and per leave).
2. **Join/leave cost**: ``--cycles`` connections, one after another, each opening
   ``/ws/bench`` (welcome, and the snapshot in a presence room) and closing, against a
   presence room and a plain room, on ``memory://`` and on Redis: wall time and server CPU
   per cycle, and the Redis memory a presence room holds while its members are in it.

Servers are ``bench/servers/presence_server.py``, pinned to CPU 0; clients run here. The
cost of presence for a *plain* room (presence configured for other rooms) is the closed
loop of ``bench/run.py`` with the ``wsplugin_other_presence`` server. Results go to
``bench/results/<time>-presence.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psutil  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench import redis_fanout  # noqa: E402
from bench.procs import child_env, free_port, pinned, stop, wait_port  # noqa: E402

SERVER = os.path.join(ROOT, "bench", "servers", "presence_server.py")
QUIET = 1.5
"""Seconds without a frame after which a room counts as quiet."""


@contextlib.contextmanager
def server(mode: str, backend: str = "memory://") -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    cmd = [sys.executable, SERVER, "--port", str(port), "--presence", mode, "--backend", backend]
    env = {**child_env(), "WSPLUGIN_REDIS_PREFIX": f"wspresence{port}"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=pinned(0))
    try:
        wait_port(port, proc)
        yield f"ws://127.0.0.1:{port}/ws/bench", psutil.Process(proc.pid)
    finally:
        stop(proc)


class Counted:
    """One client socket and what it received since :meth:`reset`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames = 0
        self.bytes = 0
        self.last = time.monotonic()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                self.frames += 1
                self.bytes += len(frame)
                self.last = time.monotonic()

    def reset(self) -> None:
        self.frames = self.bytes = 0

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def open_counted(url: str, user: str) -> Counted:
    ws = await connect(f"{url}?user={user}", max_size=None, open_timeout=60)
    return Counted(ws)


async def quiet(clients: Sequence[Counted]) -> None:
    """Wait until none of ``clients`` received a frame for :data:`QUIET` seconds."""
    while (idle := time.monotonic() - max(c.last for c in clients)) < QUIET:  # noqa: ASYNC110
        await asyncio.sleep(QUIET - idle)


async def mass_reconnect(url: str, members: int, observers: int) -> dict[str, Any]:
    watching = [await open_counted(url, f"obs{i}") for i in range(observers)]
    crowd = await gather_open(url, members)
    await quiet([*watching, *crowd])
    for client in watching:
        client.reset()
    started = time.monotonic()
    await asyncio.gather(*(c.close() for c in crowd))
    crowd = await gather_open(url, members)
    took = time.monotonic() - started
    await quiet([*watching, *crowd])
    result = {
        "reconnect_seconds": round(took, 3),
        "observer_frames": sum(c.frames for c in watching) / observers,
        "observer_bytes": sum(c.bytes for c in watching) / observers,
        "member_frames": sum(c.frames for c in crowd) / members,
        "member_bytes": sum(c.bytes for c in crowd) / members,
    }
    await asyncio.gather(*(c.close() for c in [*watching, *crowd]))
    return result


async def gather_open(url: str, members: int, batch: int = 100) -> list[Counted]:
    opened: list[Counted] = []
    for start in range(0, members, batch):
        end = min(members, start + batch)
        opened += await asyncio.gather(*(open_counted(url, f"u{i}") for i in range(start, end)))
    return opened


async def join_leave(url: str, process: psutil.Process, cycles: int,
                     first_frames: int) -> dict[str, Any]:
    cpu = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    for i in range(cycles):
        async with connect(f"{url}?user=c{i}") as ws:
            for _ in range(first_frames):  # welcome (and the snapshot)
                await ws.recv()
    wall = time.perf_counter() - started
    used = sum(process.cpu_times()[:2]) - cpu
    return {"cycle_ms": round(wall / cycles * 1000, 3),
            "server_cpu_ms": round(used / cycles * 1000, 3)}


def redis_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


async def held_in_redis(url: str, redis_url: str, members: int) -> int:
    """Bytes of Redis memory ``members`` presence connections of one room hold."""
    before = redis_memory(redis_url)
    crowd = await gather_open(url, members)
    await asyncio.sleep(0.5)
    held = redis_memory(redis_url) - before
    await asyncio.gather(*(c.close() for c in crowd))
    return held


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--observers", type=int, default=20)
    p.add_argument("--cycles", type=int, default=300)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {1})
    rows: list[dict[str, Any]] = []
    for mode in ("old", "builtin"):
        with server(mode) as (url, _):
            result = asyncio.run(mass_reconnect(url, args.members, args.observers))
        rows.append({"case": "mass_reconnect", "presence": mode, **result})
        print(rows[-1], flush=True)
    with redis_fanout.redis_server() as (redis_url, _):
        for backend in ("memory://", redis_url):
            for mode, frames in (("none", 1), ("builtin", 2)):
                with server(mode, backend) as (url, process):
                    result = asyncio.run(join_leave(url, process, args.cycles, frames))
                    if mode == "builtin" and backend != "memory://":
                        result["redis_bytes_per_member"] = round(asyncio.run(
                            held_in_redis(url, redis_url, args.members)) / args.members)
                name = "memory" if backend == "memory://" else "redis"
                rows.append({"case": "join_leave", "backend": name, "presence": mode,
                             **result})
                print(rows[-1], flush=True)
    print()
    print(report(rows))
    save(rows, argv)
    return 0


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| mass reconnect | per observer: frames | bytes | per member: frames | bytes |",
             "|---|---|---|---|---|"]
    mass = {r["presence"]: r for r in rows if r["case"] == "mass_reconnect"}
    for mode, r in mass.items():
        lines.append(f"| {mode} | {r['observer_frames']:.0f} | {r['observer_bytes']:,.0f} | "
                     f"{r['member_frames']:.0f} | {r['member_bytes']:,.0f} |")
    if "old" in mass and "builtin" in mass:
        old, new = mass["old"], mass["builtin"]
        lines.append(f"| old / built-in | {ratio(old['observer_frames'], new['observer_frames'])}"
                     f" | {ratio(old['observer_bytes'], new['observer_bytes'])} | "
                     f"{ratio(old['member_frames'], new['member_frames'])} | "
                     f"{ratio(old['member_bytes'], new['member_bytes'])} |")
    lines += ["", "| join + leave | presence | ms per cycle | server CPU ms per cycle |",
              "|---|---|---|---|"]
    for r in rows:
        if r["case"] == "join_leave":
            lines.append(f"| {r['backend']} | {r['presence']} | {r['cycle_ms']} | "
                         f"{r['server_cpu_ms']} |")
    held = [r for r in rows if "redis_bytes_per_member" in r]
    if held:
        lines.append(f"\nRedis memory held per presence member: "
                     f"{held[0]['redis_bytes_per_member']} bytes")
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return "inf" if not b else f"{a / b:.1f}x"


def save(rows: list[dict[str, Any]], argv: Sequence[str] | None) -> None:
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(ROOT, "bench", "results", f"{stamp}-presence.jsonl")
    with open(path, "w") as out:
        out.write(json.dumps({"command": " ".join(["python bench/presence.py",
                                                   *(argv or sys.argv[1:])])}) + "\n")
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(f"results -> {path}")


if __name__ == "__main__":
    sys.exit(main())
