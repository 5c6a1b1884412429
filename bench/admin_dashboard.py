"""The admin dashboard at scale (not a CI test): 10,000 connections, Chromium on the page.

    .venv/bin/python bench/admin_dashboard.py [--idle 10000] [--fanout 1000] [--duration 5]

Measures, against ``bench/servers/wsplugin_server.py --admin`` (no auth) pinned to core 0:

- page load: from navigation until the connections table shows "1-50 of 10,000";
- how long a new connection takes to show up in the open page;
- the SSE stream's bytes per second while the fan-out benchmark runs;
- fan-out throughput (``bench/loadgen.py`` closed loop, one room of ``--fanout`` receivers,
  median of ``--reps`` runs after a discarded warm-up): without any dashboard open, with one
  SSE stream read (the server-side cost alone), and with the dashboard open in Chromium
  (pinned to the load generator's core) plus one SSE stream, side by side; and the server's
  CPU time per delivery, which stays fair when the browser takes CPU from the machine.

``--lag`` measures instead how long the server's event loop is blocked (a task that sleeps
5 ms and notes how late it wakes, and every garbage collection timed, in the server:
``bench/servers/_common.py`` ``LagMonitor``) over ``--lag-seconds`` with the dashboard
closed, then as long with it open in Chromium while a client pages, searches and filters
the connections and rooms through the API (every request's time is reported too): max
and p99 of the lag, and the longest full collection.

The idle connections are held by a child process (this script with ``--hold``). Results go
to stdout as a table and to ``bench/results/admin_dashboard.json`` (``--lag``:
``admin_lag.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.plan import SERVERS  # noqa: E402
from bench.procs import child_env, pinned, run_loadgen, server_process  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RESULTS = os.path.join(ROOT, "bench", "results", "admin_dashboard.json")
LAG_RESULTS = os.path.join(ROOT, "bench", "results", "admin_lag.json")
ADMIN = "/ws-admin"


# -- the idle-connection holder (a child process) -----------------------------------------


async def hold(url: str, count: int, rooms: int) -> None:
    from websockets.asyncio.client import connect

    clients = []
    for first in range(0, count, 500):
        batch = [
            connect(f"{url}/ws/idle{n % rooms}?user=idle{n}", open_timeout=120, max_queue=4)
            for n in range(first, min(first + 500, count))
        ]
        clients += await asyncio.gather(*batch)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


@contextlib.contextmanager
def holder(port: int, count: int, cpu: int | None) -> Any:
    cmd = [sys.executable, __file__, "--hold", str(count), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, preexec_fn=pinned(cpu))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the connection holder failed")
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- measurements ------------------------------------------------------------------------


def fanout(port: int, pid: int, receivers: int, duration: float) -> dict[str, Any]:
    scenario = {"kind": "closed", "n": receivers, "duration": duration, "warmup": 1.0,
                "window": 10, "size": 100, "protocol": "envelope", "timeout": 180.0}
    result = run_loadgen(f"ws://127.0.0.1:{port}/ws/bench", scenario, pid, cpu=1)
    if not result.get("ok"):
        raise RuntimeError(result.get("error"))
    return result


async def sse_bytes(port: int, stop: asyncio.Event) -> dict[str, float]:
    import httpx

    counted = {"bytes": 0, "deltas": 0}
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
        http.stream("GET", f"{ADMIN}/api/stream") as response,
    ):
        chunks = response.aiter_raw()
        first = await anext(chunks)  # the snapshot (not counted: the rate is what we want)
        started = time.monotonic()

        async def count() -> None:
            async for chunk in chunks:
                counted["bytes"] += len(chunk)
                counted["deltas"] += chunk.count(b"event: delta")

        reader = asyncio.ensure_future(count())
        await stop.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        elapsed = time.monotonic() - started
    return {"bytes_per_s": counted["bytes"] / elapsed, "deltas_per_s": counted["deltas"] / elapsed,
            "snapshot_bytes": len(first), "seconds": elapsed}


async def with_dashboard(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright, expect
    from websockets.asyncio.client import connect

    out: dict[str, Any] = {}
    expected = f"of {args.idle:,}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        started = time.monotonic()
        await page.goto(f"http://127.0.0.1:{port}{ADMIN}/")
        await expect(page.locator("#conn-count")).to_contain_text(expected, timeout=60_000)
        out["page_load_s"] = time.monotonic() - started

        ws = await connect(f"ws://127.0.0.1:{port}/ws/lobby?user=newcomer")
        welcome = json.loads(await ws.recv())
        started = time.monotonic()
        row = page.locator(f'tr[data-id="{welcome["connection_id"]}"]')
        await expect(row).to_be_visible(timeout=60_000)
        out["new_connection_visible_s"] = time.monotonic() - started
        await ws.close()

        stop = asyncio.Event()
        sse = asyncio.ensure_future(sse_bytes(port, stop))
        runs = [await asyncio.to_thread(fanout, port, pid, args.fanout, args.duration)
                for _ in range(args.reps)]
        out["fanout"] = median_run(runs)
        out["fanout_runs"] = [r["deliveries_per_s"] for r in runs]
        stop.set()
        out["sse"] = await sse
        await browser.close()
    return out


async def stream_only(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fan-out while one SSE stream is read (no browser): the server-side cost alone."""
    stop = asyncio.Event()
    sse = asyncio.ensure_future(sse_bytes(port, stop))
    await asyncio.sleep(0.5)
    result = await asyncio.to_thread(fanout, port, pid, args.fanout, args.duration)
    stop.set()
    return {"fanout": result, "sse": await sse}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (runs vary a lot on a small machine)."""
    ordered = sorted(runs, key=lambda r: float(r["deliveries_per_s"]))
    return ordered[len(ordered) // 2]


def per_delivery_us(result: dict[str, Any]) -> float:
    """Server CPU microseconds per delivery: fair even when the browser steals CPU time."""
    return float(result["server_cpu"]) / float(result["deliveries_per_s"]) * 1e6


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"idle_connections": args.idle, "fanout_receivers": args.fanout}
    with server_process(SERVERS["wsplugin_admin"], (), cpu=0) as server:
        with holder(server.port, args.idle, cpu=1):
            fanout(server.port, server.pid, args.fanout, args.duration)  # warm-up, discarded
            without, streamed = [], []
            for _ in range(args.reps):  # interleaved, so drift hits both alike
                without.append(fanout(server.port, server.pid, args.fanout, args.duration))
                streamed.append(asyncio.run(stream_only(server.port, server.pid, args)))
            results["without"] = median_run(without)
            results["without_runs"] = [r["deliveries_per_s"] for r in without]
            results["stream_only"] = {
                "fanout": median_run([r["fanout"] for r in streamed]),
                "fanout_runs": [r["fanout"]["deliveries_per_s"] for r in streamed],
                "sse": streamed[-1]["sse"],
            }
            # Chromium shares the load generator's core, not the server's.
            os.sched_setaffinity(0, {1})
            results["with"] = asyncio.run(with_dashboard(server.port, server.pid, args))
        if server.crashed():
            raise RuntimeError(server.log_tail())
    without = results["without"]["deliveries_per_s"]
    with_ = results["with"]["fanout"]["deliveries_per_s"]
    results["ratio_with_over_without"] = with_ / without if without else None
    stream = results["stream_only"]["fanout"]["deliveries_per_s"]
    results["ratio_stream_only_over_without"] = stream / without if without else None
    return results


def table(r: dict[str, Any]) -> str:
    w = r["with"]
    rows = [
        ("idle connections", f"{r['idle_connections']:,}"),
        ("page load (table shows all counts)", f"{w['page_load_s'] * 1000:.0f} ms"),
        ("new connection visible in the page", f"{w['new_connection_visible_s'] * 1000:.0f} ms"),
        ("SSE stream during fan-out", f"{w['sse']['bytes_per_s'] / 1024:.1f} KiB/s, "
                                      f"{w['sse']['deltas_per_s']:.1f} deltas/s"),
        ("SSE snapshot size", f"{w['sse']['snapshot_bytes'] / 1024:.1f} KiB"),
        ("fan-out without dashboard", f"{r['without']['deliveries_per_s']:,.0f} deliveries/s"),
        ("fan-out with dashboard open", f"{w['fanout']['deliveries_per_s']:,.0f} deliveries/s"),
        ("ratio with / without", f"{r['ratio_with_over_without']:.3f}"),
        ("fan-out with one SSE stream, no browser",
         f"{r['stream_only']['fanout']['deliveries_per_s']:,.0f} deliveries/s"),
        ("ratio SSE-only / without", f"{r['ratio_stream_only_over_without']:.3f}"),
        ("server CPU per delivery: without / SSE-only / browser",
         " / ".join(f"{per_delivery_us(x):.2f} us" for x in
                    (r["without"], r["stream_only"]["fanout"], w["fanout"]))),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# -- event-loop lag ------------------------------------------------------------------------


def lag_summary(server: Any, path: str, k: int) -> dict[str, Any]:
    """The server's lag since the previous summary (``SIGUSR2``, see ``LagMonitor``)."""
    os.kill(server.pid, signal.SIGUSR2)
    done = f"{path}.done{k}"
    deadline = time.monotonic() + 60
    while not os.path.exists(done):
        if time.monotonic() > deadline:
            raise TimeoutError("the server wrote no lag summary")
        time.sleep(0.1)
    with open(path) as f:
        summary: dict[str, Any] = json.load(f)
    return summary


API_READS = [
    "/connections?offset=0&limit=50",
    "/connections?offset=5000&limit=50",
    "/connections?offset=19000&limit=500",
    "/connections?q=idle7&limit=50",
    "/connections?q=zzz-nothing&limit=50",
    "/connections?room=idle3&limit=50",
    "/connections?room=idle3&offset=150&limit=50",
    "/rooms?offset=0&limit=50",
    "/rooms?q=idle1&limit=50",
    "/rooms/idle3?limit=50",
    "/overview",
]
"""What the client asks, in turn, while the dashboard is open: pages, searches, filters."""


async def api_reads(port: int, stop: asyncio.Event) -> dict[str, dict[str, float]]:
    """Ask :data:`API_READS` in a loop (one at a time, 0.2 s apart) until ``stop``; the
    slowest answer per read."""
    import httpx

    slowest: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}{ADMIN}/api",
                                 timeout=60) as http:
        while not stop.is_set():
            for path in API_READS:
                started = time.monotonic()
                response = await http.get(path)
                elapsed = 1000 * (time.monotonic() - started)
                response.raise_for_status()
                entry = slowest.setdefault(path, {"max_ms": 0.0, "count": 0})
                entry["max_ms"] = max(entry["max_ms"], elapsed)
                entry["count"] += 1
                await asyncio.sleep(0.2)
    return slowest


async def dashboard_open(port: int, seconds: float, idle: int) -> dict[str, Any]:
    """Chromium on the dashboard (connections tab, then the rooms tab with a room open)
    and a client reading the API, for ``seconds``."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(f"http://127.0.0.1:{port}{ADMIN}/")
        await expect(page.locator("#conn-count")).to_contain_text(f"of {idle:,}",
                                                                  timeout=60_000)
        stop = asyncio.Event()
        reads = asyncio.ensure_future(api_reads(port, stop))
        await asyncio.sleep(seconds / 2)
        await page.click('[data-tab="rooms"]')
        await page.click('#room-table tbody tr[data-room="idle3"]')
        await asyncio.sleep(seconds / 2)
        stop.set()
        slowest = await reads
        await browser.close()
    return slowest


def run_lag(args: argparse.Namespace) -> dict[str, Any]:
    path = os.path.join(ROOT, "bench", "results", f"lag-{os.getpid()}.json")
    os.environ["WSBENCH_LAG_FILE"] = path
    results: dict[str, Any] = {"idle_connections": args.idle, "seconds": args.lag_seconds}
    try:
        with server_process(SERVERS["wsplugin_admin"], (), cpu=0) as server:
            with holder(server.port, args.idle, cpu=1):
                time.sleep(5)  # settle after the connection storm
                lag_summary(server, path, 1)  # discard the connection storm
                time.sleep(args.lag_seconds)
                results["closed"] = lag_summary(server, path, 2)
                os.sched_setaffinity(0, {1})  # Chromium beside the holder, not the server
                results["api_slowest"] = asyncio.run(
                    dashboard_open(server.port, args.lag_seconds, args.idle))
                results["open"] = lag_summary(server, path, 3)
            if server.crashed():
                raise RuntimeError(server.log_tail())
    finally:
        os.environ.pop("WSBENCH_LAG_FILE", None)
        for name in os.listdir(os.path.dirname(path)):
            if name.startswith(os.path.basename(path)):
                os.remove(os.path.join(os.path.dirname(path), name))
    return results


def lag_table(r: dict[str, Any]) -> str:
    lines = ["| dashboard | lag max | lag p99 | lag p99.9 | > 20 ms | full collections "
             "(max) | objects tracked (frozen) | server CPU |", "|---|---|---|---|---|---|---|---|"]
    for name in ("closed", "open"):
        s = r[name]
        gc2 = s["gc"]["2"]
        lines.append(f"| {name} | {s['lag_max_ms']:.1f} ms | {s['lag_p99_ms']:.1f} ms | "
                     f"{s['lag_p999_ms']:.1f} ms | {s['over_20ms']} | {gc2['count']} "
                     f"({gc2['max_ms']:.0f} ms) | {s['gc_objects']:,} ({s['gc_frozen']:,}) | "
                     f"{s.get('cpu', 0):.2f} |")
    lines += ["", "| API read (while open) | slowest answer | asked |", "|---|---|---|"]
    lines += [f"| `{path}` | {v['max_ms']:.0f} ms | {v['count']} |"
              for path, v in r["api_slowest"].items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--idle", type=int, default=10_000, help="idle connections held open")
    p.add_argument("--fanout", type=int, default=1000, help="receivers in the fan-out room")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of each fan-out run")
    p.add_argument("--reps", type=int, default=3, help="fan-out runs per variant (median)")
    p.add_argument("--lag", action="store_true",
                   help="measure the event-loop lag, dashboard closed vs open, instead")
    p.add_argument("--lag-seconds", type=float, default=60.0, help="seconds of each --lag phase")
    p.add_argument("--hold", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.hold:
        from bench.loadgen import raise_fd_limit

        raise_fd_limit()
        asyncio.run(hold(f"ws://127.0.0.1:{args.port}", args.hold, rooms=100))
        return
    from bench.loadgen import raise_fd_limit

    raise_fd_limit()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    if args.lag:
        lag = run_lag(args)
        with open(LAG_RESULTS, "w") as out:
            json.dump(lag, out, indent=2)
        print(lag_table(lag))
        return
    results = run(args)
    with open(RESULTS, "w") as out:
        json.dump(results, out, indent=2)
    print(table(results))


if __name__ == "__main__":
    main()
