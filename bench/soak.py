"""Soak: idle connections that come and go beside a busy room, for ten minutes (not a CI test).

    python bench/soak.py                          # 18,900 idle + a room of 1,000, 10 minutes
    python bench/soak.py --duration 60 --idle 2000  # a short run, to try it out

The contract: "20,000 idle connections plus a 1,000-member room at 20 messages/s for 10
minutes, with 5 % of the idle connections reconnecting every minute: RSS flat (growth < 2 %
over the last 5 minutes), no lost message in the active room, every drop counted."

**19,900 connections, not 20,000.** A process may hold 20,000 file descriptors on the
benchmark machine (a hard limit we cannot raise), and the server is one process: 18,900
idle + 1,000 members + the publisher = 19,901 sockets, plus the listener, the event loop's
own descriptors and a reconnect in progress, is as close as it gets. ``--idle`` sets it.

One fresh ``bench/servers/wsplugin_server.py --stats-route`` (uvicorn, one worker, the
in-memory backend) pinned to core 0; the clients in load generators (``bench/loadgen.py``,
picows) pinned to core 1, none holding more than 10,000 sockets:

- **idle**: ``--holders`` processes (``hold`` scenario) hold ``--idle`` connections
  without extension offers (plain) in ``--idle-rooms`` rooms; after the start each closes
  (1000, with the close handshake) and reconnects its share of ``--reconnect-share`` of
  them per minute, one at a time on an even schedule (945 a minute by default, every
  connection at most once per 20 minutes);
- **active room**: one process (``open`` scenario) with ``--members`` members and a
  publisher at ``--rate`` messages/s; every message carries a sequence number and every
  member checks that it gets 0, 1, 2, ... (``missing``: a gap, or short of the last one).

All of them connect first; then they start together, and for ``--duration`` seconds this
script samples the server every ``--sample`` seconds: RSS (``VmRSS`` in
``/proc/<pid>/status``), CPU time (``/proc/<pid>/stat``) and open descriptors. At the end
it reads the manager's counters (``GET /bench-stats``: drops, slow closes, closes by code)
while every client is still connected, and prints a table. RSS growth is taken over the
last 5 minutes (the last half of a shorter run): the last sample against the one 5 minutes
before it. The samples and results go to ``bench/results/<time>-soak.jsonl``. Exit status
0 when RSS grew by less than ``--max-growth`` % and no message was lost.

``--trace`` is for finding what grows: the server traces its Python allocations
(``tracemalloc``, several times slower; its RSS then means little) and writes a heap snapshot
at the start of the growth window and at the end; what was allocated in between and is
still held is printed by allocation site and by object type.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.idle_memory import heap_breakdown  # noqa: E402
from bench.plan import SERVERS  # noqa: E402
from bench.procs import GatedLoadgen, Server, server_process  # noqa: E402
from bench.run import add_placement_args, cpus_for, machine, wait_for_quiet  # noqa: E402
from bench.servers._common import PROBE_DIR_ENV  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
ROOM = "bench"
PER_HOLDER = 10_000
"""At most this many idle sockets per load generator (each process may hold 20,000)."""
TICKS = os.sysconf("SC_CLK_TCK")
Record = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- the server, from outside
def sample(pid: int, t: float) -> dict[str, Any]:
    """The server's RSS (KB), CPU seconds and open descriptors at ``t`` s into the soak."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return {"type": "sample", "t": round(t, 2), "rss_kb": rss, "cpu_s": cpu,
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def server_stats(server: Server) -> dict[str, Any]:
    """The manager's counters (``wsplugin_server.py --stats-route``)."""
    url = f"http://127.0.0.1:{server.port}/bench-stats?room={ROOM}"
    with urllib.request.urlopen(url, timeout=30) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def sample_until(pid: int, t0: float, duration: float, every: float, record: Record,
                 probe: str = "") -> list[dict[str, Any]]:
    """Samples at 0, ``every``, 2 ``every``... and at ``duration`` (absolute schedule).
    With ``probe`` (a directory), heap probes at the growth window's start and at the end."""
    samples = []
    marks = [duration - growth_window(duration), duration] if probe else []
    k = 0
    while True:
        at = min(k * every, duration)
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        row = sample(pid, time.monotonic() - t0)
        samples.append(row)
        record(row)
        if marks and at >= marks[0]:
            heap_probe(pid, probe, 2 - len(marks))
            marks.pop(0)
        if at >= duration:
            return samples
        k += 1


def growth_window(duration: float) -> float:
    """RSS growth is taken over the last 5 minutes, or the last half of a shorter run."""
    return min(300.0, duration / 2)


def heap_probe(pid: int, directory: str, k: int) -> None:
    """Ask the server for heap snapshot ``k`` (``SIGUSR1``, see ``bench/servers/_common.py``)."""
    os.kill(pid, signal.SIGUSR1)
    done = os.path.join(directory, f"done-{k}")
    deadline = time.monotonic() + 600
    while not os.path.exists(done):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server wrote no heap probe {k}")
        time.sleep(0.2)


# ---------------------------------------------------------------- the run
def scenarios(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The idle holders' scenarios and the active room's."""
    holders = args.holders or max(1, math.ceil(args.idle / PER_HOLDER))
    sizes = [args.idle // holders + (1 if h < args.idle % holders else 0)
             for h in range(holders)]
    timeout = args.duration + 900.0  # setup and the parent's reads included
    rooms = max(1, args.idle_rooms // holders)
    idle = [{"kind": "hold", "n": n, "duration": args.duration, "rooms": rooms,
             "reconnect_share": args.reconnect_share, "concurrency": 200, "timeout": timeout}
            for n in sizes if n > 0]
    room = {"kind": "open", "n": args.members, "rate": args.rate, "duration": args.duration,
            "warmup": 0.0, "drain": 10.0, "size": args.size, "latency_sampled": True,
            "concurrency": 100, "timeout": timeout}
    return idle, room


def run(args: argparse.Namespace, record: Record) -> dict[str, Any]:
    """Start the server and the clients, soak, and collect everything."""
    out: dict[str, Any] = {}
    cpus = cpus_for(args)
    probe = tempfile.mkdtemp(prefix="wsbench-soak-") if args.trace else ""
    if probe:
        os.environ[PROBE_DIR_ENV] = probe  # the server's environment (bench/procs.py)
    try:
        with server_process(SERVERS["wsplugin"], ("--stats-route",), cpus[0]) as server:
            soak(server, args, record, probe, cpus[1], out)
        if probe:
            out["heap"] = heap_breakdown(probe, 1)
    finally:
        os.environ.pop(PROBE_DIR_ENV, None)
        if probe:
            shutil.rmtree(probe, ignore_errors=True)
    return out


def soak(server: Server, args: argparse.Namespace, record: Record, probe: str,
         cpu: int | None, out: dict[str, Any]) -> None:
    """Connect every client (pinned to ``cpu``), start them together, sample, collect
    (into ``out``)."""
    idle, room = scenarios(args)
    with contextlib.ExitStack() as stack:
        t_setup = time.monotonic()
        gens = []
        for h, scenario in enumerate(idle):
            gen = GatedLoadgen(server.url(f"idle{h}"), scenario, server.pid, cpu)
            stack.callback(gen.end)
            gens.append(gen)
        for gen in gens:  # every holder connects at once; the room after them
            gen.ready()
        active = GatedLoadgen(server.url(ROOM), room, server.pid, cpu)
        stack.callback(active.end)
        active.ready()
        out["setup_s"] = time.monotonic() - t_setup
        out["stats_before"] = server_stats(server)
        for gen in [*gens, active]:
            gen.go()
        t0 = time.monotonic()
        print(f"soaking for {args.duration:.0f} s: {args.idle:,} idle in {len(gens)} "
              f"process{'es' if len(gens) > 1 else ''}, a room of {args.members:,} at "
              f"{args.rate:g}/s", flush=True)
        out["samples"] = sample_until(server.pid, t0, args.duration, args.sample, record,
                                      probe)
        out["holders"] = [gen.result() for gen in gens]
        out["room"] = active.result()
        out["stats_after"] = server_stats(server)
        out["server_crashed"] = server.crashed()
        if out["server_crashed"]:
            out["server_log"] = server.log_tail()


# ---------------------------------------------------------------- the numbers
def rss_check(samples: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """RSS at the start, at 5 minutes (the middle of a shorter run) and at the end, and its
    growth over the last 5 minutes (the last half)."""
    window = growth_window(duration)

    def at(t: float) -> dict[str, Any]:
        return min(samples, key=lambda s: abs(s["t"] - t))

    start, end = samples[0], samples[-1]
    mark = at(end["t"] - window)
    last = [s["rss_kb"] for s in samples if s["t"] >= mark["t"]]
    return {
        "window_s": window,
        "rss_mb_start": start["rss_kb"] / 1024,
        "rss_mb_mark": mark["rss_kb"] / 1024,
        "mark_t": mark["t"],
        "rss_mb_end": end["rss_kb"] / 1024,
        "rss_mb_max": max(s["rss_kb"] for s in samples) / 1024,
        "rss_mb_min_window": min(last) / 1024,
        "rss_mb_max_window": max(last) / 1024,
        "growth_pct": 100 * (end["rss_kb"] - mark["rss_kb"]) / mark["rss_kb"],
        "growth_whole_pct": 100 * (end["rss_kb"] - start["rss_kb"]) / start["rss_kb"],
        "cpu": (end["cpu_s"] - start["cpu_s"]) / max(1e-9, end["t"] - start["t"]),
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "fds_max": max(s["fds"] for s in samples),
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def summarize(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    room, holders = out["room"], out["holders"]
    before, after = out["stats_before"], out["stats_after"]
    counters = delta(after["stats"], before["stats"])
    dropped: dict[str, int] = {}
    for h in holders:
        for code, count in (h.get("idle_dropped") or {}).items():
            dropped[code] = dropped.get(code, 0) + count
    return {
        "type": "summary",
        "ok": bool(room.get("ok")) and all(h.get("ok") for h in holders)
        and not out["server_crashed"],
        "idle": args.idle, "holders": len(holders), "members": args.members, "rate": args.rate,
        "duration_s": args.duration, "setup_s": out["setup_s"],
        **rss_check(out["samples"], args.duration),
        "published": room.get("sent", 0),
        "expected": room.get("expected", 0),
        "received": room.get("received", 0),
        "lost": room.get("missing", 0),
        "out_of_order": room.get("out_of_order", 0),
        "members_complete": room.get("members_complete", 0),
        "members_disconnected": room.get("members_disconnected", 0),
        "latency": room.get("latency", {}),
        "server_dropped": counters.get("dropped", 0),
        "server_slow_closes": counters.get("slow_closes", 0),
        "server_publish_errors": counters.get("publish_errors", 0),
        "room_dropped": after["rooms"].get(ROOM, {}).get("dropped", 0)
        - before["rooms"].get(ROOM, {}).get("dropped", 0),
        "messages_out": counters.get("messages_out", 0),
        "accepted": after["accepted"] - before["accepted"],
        "closes": delta(after["closes"], before["closes"]),
        "refused": delta(after["refused"], before["refused"]),
        "connections_end": after["stats"]["connections"],
        "gc_collections": [a - b for a, b in zip(after["gc"]["collections"],
                                                 before["gc"]["collections"], strict=True)],
        "reconnects": sum(h.get("reconnects", 0) for h in holders),
        "reconnect_failures": sum(h.get("reconnect_failures", 0) for h in holders),
        "reconnect_p99_ms": slowest(holders, "reconnect_p99_ms"),
        "reconnect_max_ms": slowest(holders, "reconnect_max_ms"),
        "idle_dropped": dropped,
        "errors": [e for h in [room, *holders] for e in
                   [h.get("error"), *(h.get("errors") or []), *(h.get("reconnect_errors") or [])]
                   if e],
    }


def slowest(holders: list[dict[str, Any]], key: str) -> float:
    """The largest of the holders' values (a holder without reconnects has none: NaN)."""
    values = [float(h[key]) for h in holders if isinstance(h.get(key), int | float)]
    return max((v for v in values if not math.isnan(v)), default=0.0)


def verdicts(s: dict[str, Any], max_growth: float) -> dict[str, bool]:
    return {"rss": s["growth_pct"] < max_growth,
            "lost": s["ok"] and s["lost"] == 0 and s["out_of_order"] == 0
            and s["published"] > 0 and s["received"] == s["expected"]}


def table(s: dict[str, Any], max_growth: float) -> str:
    ok = verdicts(s, max_growth)
    lat = s["latency"]
    mark = "5 min" if s["window_s"] == 300 else f"{s['mark_t']:.0f} s"
    rows = [
        ("connections", f"{s['idle']:,} idle (plain, {s['holders']} process"
                        f"{'es' if s['holders'] > 1 else ''}) + "
                        f"{s['members']:,} members + 1 publisher"),
        ("server descriptors: start / max / end", f"{s['fds_start']:,} / {s['fds_max']:,} / "
                                                   f"{s['fds_end']:,}"),
        ("duration (setup before it)", f"{s['duration_s']:.0f} s ({s['setup_s']:.0f} s)"),
        (f"server RSS: start / {mark} / end", f"{s['rss_mb_start']:.1f} / {s['rss_mb_mark']:.1f}"
                                              f" / {s['rss_mb_end']:.1f} MB"),
        (f"RSS growth over the last {s['window_s']:.0f} s (min-max in it)",
         f"**{s['growth_pct']:+.2f} %** ({s['rss_mb_min_window']:.1f}-"
         f"{s['rss_mb_max_window']:.1f} MB): {'pass' if ok['rss'] else 'FAIL'} "
         f"(< {max_growth:g} %)"),
        ("RSS growth over the whole run", f"{s['growth_whole_pct']:+.2f} %"),
        ("server CPU (of one core)", f"{s['cpu']:.3f}"),
        ("messages published", f"{s['published']:,} at {s['rate']:g}/s"),
        ("deliveries expected / received", f"{s['expected']:,} / {s['received']:,}"),
        ("lost (out of order)", f"**{s['lost']:,}** ({s['out_of_order']:,}): "
                                f"{'pass' if ok['lost'] else 'FAIL'}; {s['members_complete']:,} "
                                f"members got every message"),
        ("delivery latency p50 / p99 / max", f"{lat.get('p50_ms', 0):.1f} / "
                                             f"{lat.get('p99_ms', 0):.1f} / "
                                             f"{lat.get('max_ms', 0):.1f} ms"),
        ("server drops / slow closes / publish errors",
         f"{s['server_dropped']:,} / {s['server_slow_closes']:,} / "
         f"{s['server_publish_errors']:,} (room: {s['room_dropped']:,} dropped)"),
        ("reconnects done / failed (close + connect + welcome: p99, max)",
         f"{s['reconnects']:,} / {s['reconnect_failures']:,}" + (
             f" ({s['reconnect_p99_ms']:.1f} ms, {s['reconnect_max_ms']:.1f} ms)"
             if s["reconnects"] else "")),
        ("server: handshakes accepted, closes by code", f"{s['accepted']:,}, {s['closes']}"),
        ("idle connections the server closed", f"{sum(s['idle_dropped'].values()):,} "
                                               f"{s['idle_dropped'] or ''}"),
        ("connections at the end (server)", f"{s['connections_end']:,}"),
        ("server garbage collections (generation 0 / 1 / 2)",
         " / ".join(f"{n:,}" for n in s["gc_collections"])),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if s["errors"]:
        lines += ["", "errors: " + "; ".join(str(e) for e in s["errors"][:10])]
    return "\n".join(lines)


def heap_table(heap: dict[str, Any], least: int = 1024) -> str:
    """What the growth window added to the server's heap and still holds."""
    lines = [f"Python heap growth over the window (tracemalloc): "
             f"{heap['traced_bytes_per_connection'] / 1024:+,.0f} KB",
             "", "| allocation site (innermost frame) | KB |", "|---|---|"]
    lines += [f"| `{name}` | {size / 1024:+,.1f} |" for name, size in heap["by_site"]
              if abs(size) >= least]
    lines += ["", "| object type (gc-tracked) | objects | KB (getsizeof) |", "|---|---|---|"]
    lines += [f"| `{name}` | {count:+,.0f} | {size / 1024:+,.1f} |"
              for name, count, size in heap["by_type"] if size >= least]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    p.add_argument("--idle", type=int, default=18_900, help="idle connections")
    p.add_argument("--members", type=int, default=1000, help="members of the active room")
    p.add_argument("--rate", type=float, default=20.0, help="messages/s into the active room")
    p.add_argument("--size", type=int, default=100, help="bytes per published frame")
    p.add_argument("--reconnect-share", type=float, default=0.05,
                   help="share of the idle connections that reconnect per minute")
    p.add_argument("--holders", type=int, default=0,
                   help=f"processes holding the idle connections (0: one per {PER_HOLDER:,})")
    p.add_argument("--idle-rooms", type=int, default=100, help="rooms of the idle connections")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between server samples")
    p.add_argument("--max-growth", type=float, default=2.0,
                   help="RSS growth over the last 5 minutes that fails the run, in %%")
    p.add_argument("--trace", action="store_true",
                   help="trace the server's allocations: what the growth window added")
    add_placement_args(p, 20.0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, time.strftime("%Y%m%d-%H%M%S") + "-soak.jsonl")
    with open(path, "w") as jsonl:
        def record(row: dict[str, Any]) -> None:
            jsonl.write(json.dumps(row) + "\n")
            jsonl.flush()

        record({**machine(), "command": " ".join(
            ["python", "bench/soak.py", *(argv if argv is not None else sys.argv[1:])])})
        wait_for_quiet(args.quiet)
        out = run(args, record)
        for h, holder in enumerate(out["holders"]):
            record({"type": "holder", "holder": h, **holder})
        record({"type": "room", **out["room"]})
        record({"type": "stats", "before": out["stats_before"], "after": out["stats_after"],
                "server_log": out.get("server_log")})
        if "heap" in out:
            record({"type": "heap", **out["heap"]})
        summary = summarize(out, args)
        record(summary)
    print(f"\nresults -> {path}\n")
    print(table(summary, args.max_growth))
    if "heap" in out:
        print()
        print(heap_table(out["heap"]))
    ok = verdicts(summary, args.max_growth)
    return 0 if summary["ok"] and all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
