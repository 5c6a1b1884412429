"""Idle memory per connection: raw, naive and wsplugin side by side, with and without deflate.

    python bench/idle_memory.py                          # 10,000 and 19,900 connections
    python bench/idle_memory.py --n 10000 --trace-n 2000 # plus where the bytes go
    python bench/idle_memory.py --servers raw,naive,wsplugin,wsplugin_wsproto --reps 3

For every connection count, every client offer (``plain``: no extension; ``deflate``:
Chromium's ``permessage-deflate; client_max_window_bits``) and every server (interleaved,
rotated per repetition), a fresh server gets 10 warm-up connections, then ``n`` idle ones;
the server's RSS growth divided by ``n`` is the row's KB per connection, and ``x raw`` is
its ratio to the raw ``websockets`` server's in the same repetition.

``--trace-n`` adds a second pass per server and offer at that count, with the server's
Python allocations traced (``tracemalloc``; RSS is meaningless in that pass): heap growth per
connection, split by allocation site and by object type, written to
``bench/results/<time>-idle-memory.jsonl`` and printed. The process's fd limit (20,000
here) caps a server at about 19,990 connections, hence 19,900 for "20,000".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.plan import SERVERS  # noqa: E402
from bench.procs import run_loadgen, server_process  # noqa: E402
from bench.run import add_placement_args, cpus_for, machine, rotated, wait_for_quiet  # noqa: E402
from bench.servers._common import PROBE_DIR_ENV  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
OFFERS = ("plain", "deflate")


def scenario(n: int, offer: str, probe_dir: str = "") -> dict[str, Any]:
    # traced, a server answers handshakes several times slower: fewer at a time, so none
    # runs into the server's handshake timeout
    return {"kind": "idle", "n": n, "warmup": 2.0, "deflate": offer == "deflate",
            "concurrency": 50 if probe_dir else 200, "timeout": 600.0, "probe_dir": probe_dir}


def run_rss(server: str, n: int, offer: str, cpus: tuple[int | None, int | None]) -> dict[str, Any]:
    spec = SERVERS[server]
    row: dict[str, Any] = {"pass": "rss", "server": server, "n": n, "offer": offer}
    with server_process(spec, (), cpus[0]) as proc:
        result = run_loadgen(proc.url(), {**scenario(n, offer), "protocol": spec.protocol},
                             proc.pid, cpus[1])
        row.update(result)
        row["server_crashed"] = proc.crashed()
    return row


# ---------------------------------------------------------------- tracing pass
def package_of(filename: str) -> str:
    """Where an allocation site lives: a project package, or the standard library."""
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for name in ("wsplugin", "admin_ui", "bench"):
        if name in parts:
            return name
    return "stdlib:" + parts[-1]


def site(frame: tracemalloc.Frame) -> str:
    parts = frame.filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    elif "wsplugin" in parts:
        parts = parts[parts.index("wsplugin"):]
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{frame.lineno}"


def owner(traceback: tracemalloc.Traceback) -> str:
    """Who an allocation belongs to, from its innermost frames (docs/benchmarks.md)."""
    frames = list(traceback)
    inner = frames[-1].filename
    site_name = f"{os.path.basename(inner)}:{frames[-1].lineno}"
    if site_name in ("permessage_deflate.py:72", "permessage_deflate.py:75"):
        return "zlib compressor and inflater"
    if inner.endswith("/wsplugin/delivery/uvicorn_idle.py"):  # uvicorn's parts, rebuilt smaller
        return "uvicorn's protocol (queue, events, scope, task, timers)"
    if "/wsplugin/" in inner:
        return "wsplugin's own objects and coroutines"
    if "/websockets/" in inner and ("http11.py" in inner or "datastructures.py" in inner):
        return "handshake request and answer"
    if any(x in inner for x in ("/starlette/", "/fastapi/", "contextlib.py")):
        return "framework layers"
    if any("/uvicorn/" in frame.filename for frame in frames[-3:]):
        return "uvicorn's protocol (queue, events, scope, task, timers)"
    if "/websockets/" in inner:
        return "websockets' sans-I/O connection"
    return "asyncio, h11/wsproto and the rest"


def heap_breakdown(directory: str, n: int, top: int = 25) -> dict[str, Any]:
    """Heap growth per connection between probe 0 and 1: by site, package, object type."""
    before = tracemalloc.Snapshot.load(os.path.join(directory, "snap-0.pickle"))
    after = tracemalloc.Snapshot.load(os.path.join(directory, "snap-1.pickle"))
    by_site: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    by_owner: collections.Counter[str] = collections.Counter()
    total = 0
    for diff in after.compare_to(before, "traceback"):
        innermost = diff.traceback[-1]  # a traceback runs from the oldest frame
        by_site[site(innermost)] += diff.size_diff
        by_package[package_of(innermost.filename)] += diff.size_diff
        by_owner[owner(diff.traceback)] += diff.size_diff
        total += diff.size_diff
    types = {k: read_types(os.path.join(directory, f"types-{k}.txt")) for k in (0, 1)}
    by_type = {name: (count - types[0].get(name, (0, 0))[0], size - types[0].get(name, (0, 0))[1])
               for name, (count, size) in types[1].items()}
    return {
        "traced_bytes_per_connection": total / n,
        "by_site": [(name, size / n) for name, size in by_site.most_common(top)],
        "by_package": [(name, size / n) for name, size in by_package.most_common()],
        "by_owner": [(name, size / n) for name, size in by_owner.most_common()],
        "by_type": sorted(((name, count / n, size / n) for name, (count, size) in by_type.items()
                           if size > 0), key=lambda item: -item[2])[:top],
    }


def read_types(path: str) -> dict[str, tuple[int, int]]:
    out = {}
    with open(path) as f:
        for line in f:
            name, count, size = line.rstrip("\n").split("\t")
            out[name] = (int(count), int(size))
    return out


def run_trace(server: str, n: int, offer: str, cpus: tuple[int | None, int | None],
              keep: bool = False) -> dict[str, Any]:
    spec = SERVERS[server]
    row: dict[str, Any] = {"pass": "trace", "server": server, "n": n, "offer": offer}
    directory = tempfile.mkdtemp(prefix=f"wsbench-probe-{server}-{offer}-")
    saved = os.environ.get(PROBE_DIR_ENV)
    os.environ[PROBE_DIR_ENV] = directory
    try:
        with server_process(spec, (), cpus[0]) as proc:
            result = run_loadgen(proc.url(), {**scenario(n, offer, directory),
                                              "protocol": spec.protocol}, proc.pid, cpus[1])
            row.update(ok=result.get("ok"), error=result.get("error"),
                       deflate_negotiated=result.get("deflate_negotiated"))
        if result.get("ok"):
            row.update(heap_breakdown(directory, n))
    finally:
        if saved is None:
            os.environ.pop(PROBE_DIR_ENV, None)
        else:
            os.environ[PROBE_DIR_ENV] = saved
        if keep:
            row["probe_dir"] = directory
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return row


# ---------------------------------------------------------------- report
def rss_table(rows: list[dict[str, Any]], servers: Sequence[str]) -> str:
    """KB per connection (median over repetitions) and its per-repetition ratio to raw."""
    lines = ["| connections | offer | " + " | ".join(servers) + " |",
             "|---|---|" + "---|" * len(servers)]
    keys = sorted({(r["n"], r["offer"]) for r in rows if r["pass"] == "rss"},
                  key=lambda k: (k[0], OFFERS.index(k[1])))
    for n, offer in keys:
        cells = []
        for server in servers:
            mine = [r for r in rows if (r["n"], r["offer"], r["server"]) == (n, offer, server)
                    and r["pass"] == "rss" and r.get("ok")]
            if not mine:
                cells.append("-")
                continue
            kb = median([r["kb_per_connection"] for r in mine])
            ratios = []
            for r in mine:
                raw = [b for b in rows if b["pass"] == "rss" and b.get("ok")
                       and (b["server"], b["n"], b["offer"], b["rep"]) == ("raw", n, offer,
                                                                           r["rep"])]
                if raw and raw[0]["kb_per_connection"] > 0:
                    ratios.append(r["kb_per_connection"] / raw[0]["kb_per_connection"])
            ratio = f" ({median(ratios):.2f}x raw)" if ratios and server != "raw" else ""
            cells.append(f"{kb:.1f}{ratio}")
        lines.append(f"| {n:,} | {offer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def trace_report(row: dict[str, Any]) -> str:
    if not row.get("ok"):
        return f"{row['server']} {row['offer']}: FAILED {row.get('error')}"
    out = [f"### {row['server']}, {row['offer']}, n={row['n']:,}: "
           f"{row['traced_bytes_per_connection']:,.0f} traced bytes per connection",
           "", "| owner | bytes/conn |", "|---|---|"]
    out += [f"| {name} | {size:,.0f} |" for name, size in row["by_owner"] if abs(size) >= 20]
    out += ["", "| package | bytes/conn |", "|---|---|"]
    out += [f"| {name} | {size:,.0f} |" for name, size in row["by_package"] if abs(size) >= 20]
    out += ["", "| allocation site (innermost frame) | bytes/conn |", "|---|---|"]
    out += [f"| `{name}` | {size:,.0f} |" for name, size in row["by_site"] if abs(size) >= 20]
    out += ["", "| object type (gc-tracked) | objects/conn | bytes/conn (getsizeof) |",
            "|---|---|---|"]
    out += [f"| `{name}` | {count:.2f} | {size:,.0f} |" for name, count, size in row["by_type"]
            if size >= 20]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", default="10000,19900", help="connection counts (comma-separated)")
    p.add_argument("--servers", default="raw,naive,wsplugin")
    p.add_argument("--offers", default=",".join(OFFERS), help="plain, deflate or both")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--trace-n", type=int, default=0,
                   help="also trace allocations at this many connections (0: no tracing)")
    p.add_argument("--no-rss", action="store_true", help="only the tracing pass")
    p.add_argument("--keep", action="store_true",
                   help="keep the tracing pass's snapshots (their directory is in the results)")
    add_placement_args(p, 20.0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    offers = [o for o in args.offers.split(",") if o]
    counts = [int(n) for n in args.n.split(",") if n]
    cpus = cpus_for(args)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, time.strftime("%Y%m%d-%H%M%S") + "-idle-memory.jsonl")
    rows: list[dict[str, Any]] = []
    with open(path, "w") as out:
        out.write(json.dumps({**machine(), "command": " ".join(
            ["python", "bench/idle_memory.py", *(argv or sys.argv[1:])])}) + "\n")

        def record(row: dict[str, Any], rep: int) -> None:
            row["rep"] = rep
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
            kb = row.get("kb_per_connection")
            heap = row.get("traced_bytes_per_connection")
            shown = f"{kb:.1f} KB/conn RSS" if kb is not None else (
                f"{heap:,.0f} B/conn traced" if heap is not None else row.get("error"))
            print(f"  {row['pass']:<5} {row['server']:<18} n={row['n']:<6} {row['offer']:<8} "
                  f"rep {rep}: {shown}", flush=True)

        for rep in range(args.reps):
            for n in counts if not args.no_rss else ():
                for offer in offers:
                    for server in rotated(servers, rep):
                        wait_for_quiet(args.quiet)
                        record(run_rss(server, n, offer, cpus), rep)
        if args.trace_n:
            for offer in offers:
                for server in servers:
                    record(run_trace(server, args.trace_n, offer, cpus, args.keep), 0)
    print(f"\nresults -> {path}\n")
    print(rss_table(rows, servers))
    for row in rows:
        if row["pass"] == "trace":
            print()
            print(trace_report(row))
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
