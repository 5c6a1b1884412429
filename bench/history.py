"""History rooms against plain rooms, memory and Redis, side by side in one run.

    python bench/history.py                      # 4 fan-out configs + recovery (about 2 min)
    python bench/history.py --n 50 --duration 3 --recoveries 10

Each configuration starts a fresh uvicorn process (``bench/servers/wsplugin_server.py``,
one worker) and, for Redis, shares one private ``redis-server``; the history configs set
``WSPLUGIN_HISTORY`` so the benchmark room keeps its last 1,000 messages. The load generator
(``bench/loadgen.py``, as in ``bench/redis_fanout.py``: 1 sender publishing as a client, N
receivers, closed loop) runs in this process. Then the recovery time of 300 messages: 300
publishes, then a client connects with ``?epoch=…&offset=0`` and the time until its 300th
recovered message is measured (median and max over ``--recoveries`` runs).
Results go to ``bench/results/<time>-history.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from websockets.asyncio.client import connect  # noqa: E402

from bench import loadgen, redis_fanout  # noqa: E402
from bench.procs import child_env, free_port, stop, wait_port  # noqa: E402

HISTORY = json.dumps({"bench": {"size": 1000, "ttl": 60}, "recover-*": {"size": 1000}})
CONFIGS = [("memory", False), ("memory", True), ("redis", False), ("redis", True)]


def name_of(backend: str, history: bool) -> str:
    return f"{backend} {'history' if history else 'plain'}"


@contextlib.contextmanager
def server(backend: str, history: bool, redis_url: str,
           redis_pid: int) -> Iterator[redis_fanout.Cluster]:
    url = redis_url if backend == "redis" else "memory://"
    env = {**child_env(), "WSPLUGIN_REDIS_PREFIX": redis_fanout.PREFIX,
           "WSPLUGIN_RECOVERY_MAX_MESSAGES": "1000"}
    if history:
        env["WSPLUGIN_HISTORY"] = HISTORY
    port = free_port()
    cmd = [sys.executable, redis_fanout.SERVER, "--port", str(port), "--backend", url]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        wait_port(port, proc)
        pids = [proc.pid] + ([redis_pid] if backend == "redis" else [])
        yield redis_fanout.Cluster([proc], [port], redis_pid, pids)
    finally:
        stop(proc)
        with contextlib.suppress(Exception):
            redis_fanout.flush(redis_url)


async def recover_once(port: int, room: str, count: int) -> float:
    """Publish ``count`` messages, then time a recovery of all of them."""
    base = f"ws://127.0.0.1:{port}/ws/{room}"
    async with connect(base) as publisher:
        hello = json.loads(await publisher.recv())
        for i in range(count - 1):
            await publisher.send(json.dumps({"type": "publish", "data": i}))
        await publisher.send(json.dumps({"type": "publish", "data": "last", "id": 1}))
        while json.loads(await publisher.recv())["type"] != "published":
            pass
    started = time.perf_counter()
    async with connect(f"{base}?epoch={hello['epoch']}&offset=0") as client:
        reply = json.loads(await client.recv())
        assert reply["recovered"] is True, reply
        for _ in range(count):
            await client.recv()
        return time.perf_counter() - started


async def recoveries(port: int, runs: int, count: int) -> dict[str, Any]:
    times = [await recover_once(port, f"recover-{i}", count) for i in range(runs)]
    return {"median_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2), "runs": runs, "messages": count}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="receivers")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--recoveries", type=int, default=20)
    p.add_argument("--recover", type=int, default=300, help="messages per recovery")
    args = p.parse_args(argv)
    loadgen.raise_fd_limit()
    closed = loadgen.Scenario(kind="closed", n=args.n, duration=args.duration,
                              window=max(4, 4000 // args.n))
    rows: list[dict[str, Any]] = []
    recovery: dict[str, dict[str, Any]] = {}
    with redis_fanout.redis_server() as (redis_url, redis_pid):
        for backend, history in CONFIGS:
            with server(backend, history, redis_url, redis_pid) as c:
                result = redis_fanout.run_case(c, closed)
                rows.append(summarize(name_of(backend, history), result))
                print(json.dumps(rows[-1]), flush=True)
                if history:
                    recovery[backend] = asyncio.run(
                        recoveries(c.ports[0], args.recoveries, args.recover))
                    print(json.dumps({"recovery": backend, **recovery[backend]}), flush=True)
    print(f"\nfan-out: 1 sender (client publishes), {args.n} receivers, closed loop\n")
    print(table(rows))
    print(f"\nrecovery of {args.recover} messages (connect to last recovered message)\n")
    print("| backend | median ms | max ms | runs |\n|---|---:|---:|---:|")
    for backend, r in recovery.items():
        print(f"| {backend} | {r['median_ms']} | {r['max_ms']} | {r['runs']} |")
    save(rows, recovery)
    return 0


def summarize(name: str, result: dict[str, Any]) -> dict[str, Any]:
    messages = max(1.0, result["messages_per_s"] * result["elapsed_s"])
    server_cpu_s = (result["server_cpu"] or 0.0) * result["elapsed_s"]
    return {
        "config": name,
        "deliveries_per_s": round(result["deliveries_per_s"]),
        "messages_per_s": round(result["messages_per_s"]),
        "server_cpu_us_per_message": round(server_cpu_s / messages * 1e6, 1),
        "errors": len(result["errors"]),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| config | deliveries/s | msgs/s | ratio to plain | CPU us/msg (all procs) |",
           "|---|---:|---:|---:|---:|"]
    plain: dict[str, float] = {}
    for r in rows:
        backend = r["config"].split()[0]
        plain.setdefault(backend, r["deliveries_per_s"] or 1)
        ratio = r["deliveries_per_s"] / plain[backend]
        out.append(f"| {r['config']} | {r['deliveries_per_s']:,} | {r['messages_per_s']:,} | "
                   f"{ratio:.2f} | {r['server_cpu_us_per_message']} |")
    return "\n".join(out)


def save(rows: list[dict[str, Any]], recovery: dict[str, dict[str, Any]]) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", f"{stamp}-history.jsonl")
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for backend, r in recovery.items():
            f.write(json.dumps({"type": "recovery", "backend": backend, **r}) + "\n")
    print(f"\nwritten to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
