"""Cross-worker fan-out through Redis, side by side with the single-process in-memory run.

    python bench/redis_fanout.py                 # memory x1, redis x1, x2, x4 (about 3 min)
    python bench/redis_fanout.py --workers 2 --n 200 --duration 5

Every configuration starts fresh uvicorn processes (``bench/servers/wsplugin_server.py``)
and one private ``redis-server``. The load generator (``bench/loadgen.py``: picows clients,
one sender, N receivers) runs in this process:

- ``memory x1``: one process, in-memory broker; sender and receivers on it (the baseline);
- ``redis x1``: one process with the Redis broker (the broker's local overhead);
- ``redis xK``: K processes; the sender on the first, the receivers spread over the
  others, so every message crosses Redis to K-1 nodes.

Per configuration: closed-loop throughput (deliveries/s), open-loop latency (p50/p99 at a
fixed rate) and CPU per message summed over every server process and redis-server. The
Redis hop cost is the difference to the memory baseline. Then, with the receivers
connected, the registry's footprint in Redis (``MEMORY USAGE``) per connection and the
bytes one heartbeat rewrites. Results go to ``bench/results/<time>-redis.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psutil  # noqa: E402
import redis  # noqa: E402
from picows import ws_connect  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.procs import child_env, free_port, stop, wait_port  # noqa: E402

SERVER = os.path.join(ROOT, "bench", "servers", "wsplugin_server.py")
PREFIX = "wsbench"


@dataclass
class Config:
    name: str
    backend: str  # "memory" or "redis"
    workers: int


@dataclass
class Cluster:
    procs: list[subprocess.Popen[bytes]]
    ports: list[int]
    redis_pid: int | None = None
    pids: list[int] = field(default_factory=list)

    def url(self, i: int, room: str = "bench") -> str:
        return f"ws://127.0.0.1:{self.ports[i]}/ws/{room}"


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="wsbench-redis-")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*cmd, "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def cluster(config: Config, redis_url: str, redis_pid: int) -> Iterator[Cluster]:
    backend = redis_url if config.backend == "redis" else "memory://"
    env = {**child_env(), "WSPLUGIN_REDIS_PREFIX": PREFIX}
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(config.workers):
            port = free_port()
            cmd = [sys.executable, SERVER, "--port", str(port), "--backend", backend]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env))
            ports.append(port)
        for proc, port in zip(procs, ports, strict=True):
            wait_port(port, proc)
        pids = [p.pid for p in procs] + ([redis_pid] if config.backend == "redis" else [])
        yield Cluster(procs, ports, redis_pid, pids)
    finally:
        for proc in procs:
            stop(proc)
        with contextlib.suppress(redis.RedisError):
            flush(redis_url)


def flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


class MultiMeter(loadgen.Meter):
    """CPU time of this process and of every server process (and redis-server)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(None)
        self.procs = [psutil.Process(pid) for pid in pids]
        self.server = self.procs[0]  # non-None: the window then reports server_cpu

    def cpu(self) -> tuple[float, float]:
        mine = self.me.cpu_times()
        theirs = [p.cpu_times() for p in self.procs]
        return mine.user + mine.system, sum(t.user + t.system for t in theirs)

    def rss(self) -> int:
        value = int(sum(p.memory_info().rss for p in self.procs))
        self.rss_max = max(self.rss_max, value)
        return value


class SplitClients(loadgen.Clients):
    """Receivers spread over ``receiver_urls`` (round robin), the sender on ``sender_url``."""

    def __init__(self, receiver_urls: list[str], sender_url: str, shared: loadgen.Shared) -> None:
        super().__init__(sender_url, shared)
        self.receiver_urls = receiver_urls
        self.next_receiver = 0

    async def connect_receiver(self, sampled: bool, slow: bool = False) -> loadgen.Receiver:
        listener = loadgen.Receiver(self.shared, sampled, slow)
        url = self.receiver_urls[self.next_receiver % len(self.receiver_urls)]
        self.next_receiver += 1
        await ws_connect(lambda: listener, url, websocket_handshake_timeout=60)
        await asyncio.wait_for(listener.ready, 60)
        return listener


def urls_for(c: Cluster) -> tuple[list[str], str]:
    if len(c.ports) == 1:
        return [c.url(0)], c.url(0)
    return [c.url(i) for i in range(1, len(c.ports))], c.url(0)


async def measure(c: Cluster, scenario: loadgen.Scenario) -> dict[str, Any]:
    shared = loadgen.Shared(scenario)
    receivers, sender = urls_for(c)
    clients = SplitClients(receivers, sender, shared)
    meter = MultiMeter(c.pids)
    try:
        await clients.connect_receivers(scenario.n)
        await clients.connect_sender()
        await loadgen.barrier(clients)
        runner = loadgen.run_closed if scenario.kind == "closed" else loadgen.run_open
        result = await runner(clients, meter)
        result["errors"] = shared.errors
        return result
    finally:
        clients.close()


def run_case(c: Cluster, scenario: loadgen.Scenario) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(measure(c, scenario))
    except ImportError:
        return asyncio.run(measure(c, scenario))


def registry_footprint(redis_url: str, n: int) -> dict[str, Any]:
    """Redis memory of the registry per connection, and the bytes of one heartbeat."""
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.scan_iter(f"{PREFIX}:*", count=1000)]
    usage = {k: int(client.memory_usage(k, samples=0) or 0) for k in keys}
    conns = {k: v for k, v in usage.items() if ":conns:" in k}
    payload = 0
    for key in conns:
        payload += sum(len(f) + len(v) for f, v in client.hgetall(key).items())
    client.close()
    registered = max(1, n)
    return {
        "registered_connections": n,
        "registry_bytes_total": sum(usage.values()),
        "conns_bytes_per_connection": sum(conns.values()) / registered,
        "heartbeat_payload_bytes_per_connection": payload / registered,
        "node_keys": len([k for k in keys if ":node:" in k]),
    }


def summarize(name: str, closed: dict[str, Any], opened: dict[str, Any]) -> dict[str, Any]:
    messages = max(1.0, closed["messages_per_s"] * closed["elapsed_s"])
    server_cpu_s = (closed["server_cpu"] or 0.0) * closed["elapsed_s"]
    lat = opened["latency"]
    return {
        "config": name,
        "deliveries_per_s": round(closed["deliveries_per_s"]),
        "messages_per_s": round(closed["messages_per_s"]),
        "server_cpu_us_per_message": round(server_cpu_s / messages * 1e6, 1),
        "p50_ms": round(lat["p50_ms"], 2),
        "p99_ms": round(lat["p99_ms"], 2),
        "losses": opened["losses"],
        "errors": len(closed["errors"]) + len(opened["errors"]),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    base = rows[0]
    head = (
        "| config | deliveries/s | msgs/s | ratio | CPU us/msg (all procs) "
        "| p50 ms | p99 ms | losses |"
    )
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["deliveries_per_s"] / base["deliveries_per_s"] if base["deliveries_per_s"] else 0
        out.append(
            f"| {r['config']} | {r['deliveries_per_s']:,} | {r['messages_per_s']:,} | "
            f"{ratio:.2f} | {r['server_cpu_us_per_message']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['losses']} |"
        )
    return "\n".join(out)


def summarize_hop(name: str, result: dict[str, Any]) -> dict[str, Any]:
    messages = max(1.0, result["messages_per_s"] * result["elapsed_s"])
    server_cpu_s = (result["server_cpu"] or 0.0) * result["elapsed_s"]
    return {
        "config": name,
        "case": "hop",
        "messages_per_s": round(result["messages_per_s"]),
        "server_cpu_us_per_message": round(server_cpu_s / messages * 1e6, 1),
        "p50_ms": round(result["latency"]["p50_ms"], 2),
        "p99_ms": round(result["latency"]["p99_ms"], 2),
    }


def hop_table(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| config | msgs/s | CPU us/msg (all procs) | p50 ms (16 in flight) | p99 ms |"]
    out.append("|---|---:|---:|---:|---:|")
    for r in rows:
        out.append(
            f"| {r['config']} | {r['messages_per_s']:,} | {r['server_cpu_us_per_message']} | "
            f"{r['p50_ms']} | {r['p99_ms']} |"
        )
    return "\n".join(out)


def hop_cost(rows: Sequence[dict[str, Any]]) -> list[str]:
    base = rows[0]
    out = []
    for r in rows[1:]:
        cpu = r["server_cpu_us_per_message"] - base["server_cpu_us_per_message"]
        out.append(f"{r['config']}: {cpu:+.1f} us CPU per message vs {base['config']}")
    return out


def configs(workers: Sequence[int]) -> list[Config]:
    out = [Config("memory x1", "memory", 1), Config("redis x1", "redis", 1)]
    return out + [Config(f"redis x{k}", "redis", k) for k in workers if k > 1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="receivers")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=200.0, help="open-loop messages/s")
    p.add_argument("--workers", type=int, nargs="*", default=[2, 4])
    p.add_argument("--hop-window", type=int, default=16, help="in flight, 1-receiver case")
    p.add_argument("--idle", type=int, default=1000, help="connections for the registry footprint")
    args = p.parse_args(argv)
    loadgen.raise_fd_limit()
    closed = loadgen.Scenario(
        kind="closed", n=args.n, duration=args.duration, window=max(4, 4000 // args.n)
    )
    opened = loadgen.Scenario(kind="open", n=args.n, duration=args.duration, rate=args.rate)
    hop = loadgen.Scenario(kind="closed", n=2, duration=args.duration, window=args.hop_window)
    rows: list[dict[str, Any]] = []
    hops: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    with redis_server() as (redis_url, redis_pid):
        for config in configs(args.workers):
            with cluster(config, redis_url, redis_pid) as c:
                closed_result = run_case(c, closed)
                opened_result = run_case(c, opened)
                hop_result = run_case(c, hop)
            for result in (closed_result, opened_result, hop_result):
                raw.append({"config": config.name, **result})
            rows.append(summarize(config.name, closed_result, opened_result))
            hops.append(summarize_hop(config.name, hop_result))
            print(json.dumps(rows[-1]), json.dumps(hops[-1]), flush=True)
        footprint = footprint_run(redis_url, redis_pid, args.idle)
    print(f"\nfan-out: 1 sender, {args.n} receivers\n")
    print(table(rows))
    print("\nper-message cost: 1 sender, 2 receivers (the hop dominates)\n")
    print(hop_table(hops))
    print()
    print("\n".join(hop_cost(hops)))
    print()
    print(json.dumps(footprint, indent=1))
    save([*rows, *hops], raw, footprint)
    return 0


def footprint_run(redis_url: str, redis_pid: int, n: int) -> dict[str, Any]:
    """Connect ``n`` idle clients to one Redis-backed worker and read the registry's cost."""
    with cluster(Config("redis x1", "redis", 1), redis_url, redis_pid) as c:
        idle = loadgen.Scenario(kind="idle", n=n, duration=0.5)
        holder: dict[str, Any] = {}

        async def hold() -> None:
            shared = loadgen.Shared(idle)
            clients = SplitClients([c.url(0)], c.url(0), shared)
            try:
                await clients.connect_receivers(n)
                await asyncio.sleep(2.0)  # registrations are written in the background
                holder.update(registry_footprint(redis_url, n))
                holder.update(await heartbeat_cost(redis_pid))
            finally:
                clients.close()

        asyncio.run(hold())
        return holder


async def heartbeat_cost(redis_pid: int) -> dict[str, Any]:
    """redis-server CPU while only heartbeats (one per 5 s by default) and pings run."""
    proc = psutil.Process(redis_pid)
    t0, c0 = time.perf_counter(), proc.cpu_times()
    await asyncio.sleep(10.0)
    t1, c1 = time.perf_counter(), proc.cpu_times()
    busy = (c1.user + c1.system) - (c0.user + c0.system)
    return {"redis_cpu_idle_percent": round(100 * busy / (t1 - t0), 2)}


def save(rows: list[dict[str, Any]], raw: list[dict[str, Any]], footprint: dict[str, Any]) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", f"{stamp}-redis.jsonl")
    with open(path, "w") as f:
        for row in [*rows, *raw, {"type": "footprint", **footprint}]:
            f.write(json.dumps(row, default=str) + "\n")
    print(f"\nwritten to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
