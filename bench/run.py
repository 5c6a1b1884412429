"""Run the benchmark suite and print a table of medians and ratios against the raw server.

    python bench/run.py --quick     # a few minutes: the headline numbers
    python bench/run.py --full      # everything, 3 repetitions
    python bench/run.py --smoke     # < 30 s, for CI: exits non-zero if anything fails

Every run starts its server fresh (pinned to CPU 0) and runs the load generator in its own
process (pinned to CPU 1). Servers are interleaved: within a repetition every server runs
the case back to back, in an order rotated per repetition, and ratios are taken within a
repetition. Every row is written to ``bench/results/<time>-<mode>.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psutil  # noqa: E402

from bench.plan import BASELINE, DEFAULT_SERVERS, SERVERS, Case, ServerSpec, cases  # noqa: E402
from bench.procs import run_loadgen, server_process  # noqa: E402
from bench.report import render  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    cpu = platform.processor() or ""
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {
        "type": "machine",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": names[0] if names else cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("uvicorn", "starlette", "fastapi", "websockets", "picows", "uvloop")
        },
    }


def rotated(servers: Sequence[str], rep: int) -> list[str]:
    """Interleave: repetition ``rep`` starts with a different server."""
    k = rep % len(servers)
    return [*servers[k:], *servers[:k]]


def wait_for_quiet(limit: float, busy: float = 0.25) -> float:
    """Wait (up to ``limit`` s) until other processes leave the cores alone; returns the wait.

    The benchmark machine may be shared: a run that starts while something else uses the
    cores measures that something else. Waiting for a quiet second costs little.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if psutil.cpu_percent(interval=0.5) / 100 < busy:
            break
    return time.monotonic() - t0


Cpus = tuple[int | None, int | None]


def run_one(case: Case, server: str, rep: int, cpus: Cpus) -> dict[str, Any]:
    """Start ``server`` fresh, run the case's scenario against it once, stop it."""
    spec = SERVERS[server]
    scenario = {**case.scenario, "protocol": spec.protocol, "batch": spec.batch}
    extra = case.wsplugin_args if spec.is_wsplugin else ()
    row: dict[str, Any] = {"case": case.name, "server": server, "rep": rep}
    try:
        with server_process(spec, extra, cpus[0]) as proc:
            row.update(run_loadgen(proc.url(), scenario, proc.pid, cpus[1]))
            row["server_crashed"] = proc.crashed()
            if row["server_crashed"] or not row.get("ok"):
                row["server_log"] = proc.log_tail()
    except Exception as exc:
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    return row


def summary_line(row: dict[str, Any]) -> str:
    keys = ("deliveries_per_s", "kb_per_connection", "churn_per_s", "loss_ratio")
    parts = [f"{k}={row[k]:,.3g}" for k in keys if isinstance(row.get(k), int | float)]
    p99 = (row.get("latency") or {}).get("p99_ms")
    if isinstance(p99, float):
        parts.append(f"p99={p99:.1f}ms")
    if isinstance(row.get("loadgen_cpu"), float):
        parts.append(f"gen_cpu={row['loadgen_cpu']:.2f}")
    status = "ok" if row.get("ok") and not row.get("server_crashed") else "FAILED"
    return f"  {row['case']:<22} {row['server']:<16} rep {row['rep']}: {status} {' '.join(parts)}"


def run_all(
    plan: list[Case],
    servers: Sequence[str],
    cpus: tuple[int | None, int | None],
    out: IO[str],
    quiet: float,
) -> list[dict[str, Any]]:
    rows = []
    for rep in range(max(case.reps for case in plan)):
        for case in plan:
            if rep >= case.reps:
                continue
            chosen = [s for s in servers if case.servers is None or s in case.servers]
            for server in rotated(chosen, rep):
                waited = wait_for_quiet(quiet)
                row = run_one(case, server, rep, cpus)
                row["quiet_wait_s"] = round(waited, 1)
                row["time"] = time.time()
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(summary_line(row), flush=True)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke")
    p.set_defaults(mode="quick")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"comma-separated, from: {', '.join(SERVERS)}")
    p.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    p.add_argument("--baseline-src", default="",
                   help="another checkout: adds the server wsplugin_base, wsplugin from there")
    p.add_argument("--reps", type=int, default=0, help="override the repetitions of every case")
    add_placement_args(p, None, "(default 30, 0 with --smoke)")
    p.add_argument("--out", default="", help="JSON lines file (default: bench/results/...)")
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> tuple[list[Case], list[str]]:
    plan = cases(args.mode)
    if args.cases:
        wanted = set(args.cases.split(","))
        plan = [c for c in plan if c.name in wanted]
    if args.reps:
        plan = [Case(c.name, c.scenario, args.reps, c.servers, c.wsplugin_args) for c in plan]
    servers = [s for s in args.servers.split(",") if s]
    if args.baseline_src:
        SERVERS["wsplugin_base"] = ServerSpec("wsplugin_server.py", "envelope",
                                              root=os.path.abspath(args.baseline_src))
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown servers: {unknown}; choose from {list(SERVERS)}")
    return plan, servers


def add_placement_args(p: argparse.ArgumentParser, quiet: float | None,
                       quiet_note: str = "") -> None:
    """Where the server and the load generators run, and how long to wait for quiet."""
    p.add_argument("--server-cpu", type=int, default=0, help="-1: no pinning")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="-1: no pinning")
    p.add_argument("--quiet", type=float, default=quiet,
                   help=f"wait up to this many seconds for idle cores before a run {quiet_note}")


def cpus_for(args: argparse.Namespace) -> tuple[int | None, int | None]:
    available = os.sched_getaffinity(0)
    server = args.server_cpu if args.server_cpu in available else None
    loadgen = args.loadgen_cpu if args.loadgen_cpu in available else None
    return server, loadgen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan, servers = select(args)
    if args.quiet is None:
        args.quiet = 0.0 if args.mode == "smoke" else 30.0
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out or os.path.join(RESULTS_DIR, f"{stamp}-{args.mode}.jsonl")
    cpus = cpus_for(args)
    info = {**machine(), "mode": args.mode, "servers": servers, "pinning": cpus,
            "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])])}
    print(f"{args.mode}: {len(plan)} cases x {len(servers)} servers; results -> {path}")
    with open(path, "w") as out:
        out.write(json.dumps(info) + "\n")
        rows = run_all(plan, servers, cpus, out, args.quiet)
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['date']}")
    print(render(rows, servers, BASELINE))
    failed = [r for r in rows if not r.get("ok") or r.get("server_crashed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
