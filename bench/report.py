"""Summaries of result rows: medians, spread, ratios against a baseline of the same rep."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Row = dict[str, Any]
Getter = Callable[[Row], float | None]

LOADGEN_BUSY = 0.85  # above this the generator may be the bottleneck: say so
OTHER_BUSY = 0.5  # CPU used by neither server nor generator (softirq is ~0.1-0.3 of it)


def get(path: str) -> Getter:
    """A getter for a dotted key (``"latency.p99_ms"``); None when missing."""
    keys = path.split(".")

    def getter(row: Row) -> float | None:
        value: Any = row
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return getter


def rss_growth(row: Row) -> float | None:
    start, peak = row.get("server_rss_mb_start"), row.get("server_rss_mb_max")
    return None if start is None or peak is None else peak - start


def loss_percent(row: Row) -> float | None:
    ratio = row.get("loss_ratio")
    return None if ratio is None else 100 * ratio


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def spread(values: Sequence[float]) -> str:
    """Half the range as a percentage of the median (``±3%``), or ``-`` for one value."""
    if len(values) < 2:
        return "-"
    mid = statistics.median(values)
    return f"±{50 * (max(values) - min(values)) / mid:.0f}%" if mid else "-"


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


class Table:
    """Rows of one case, grouped by server and repetition."""

    def __init__(self, rows: list[Row], servers: Sequence[str], baseline: str) -> None:
        self.servers = [s for s in servers if any(r["server"] == s for r in rows)]
        self.baseline = baseline
        self.by: dict[str, dict[int, Row]] = defaultdict(dict)
        for row in rows:
            if row.get("ok"):
                self.by[row["server"]][row["rep"]] = row

    def values(self, server: str, getter: Getter) -> list[float]:
        out = [getter(row) for row in self.by[server].values()]
        return [v for v in out if v is not None]

    def ratio(self, server: str, other: str, getter: Getter) -> float | None:
        """Median over repetitions of ``server / other`` measured in the same repetition."""
        ratios = []
        for rep, row in self.by[server].items():
            base = self.by[other].get(rep)
            value, ref = getter(row), getter(base) if base else None
            if value is not None and ref:
                ratios.append(value / ref)
        return statistics.median(ratios) if ratios else None

    def naive_of(self, server: str) -> str:
        """The naive manager on the same server: ``naive_hypercorn`` for
        ``wsplugin_hypercorn`` when it ran in this case, else ``naive`` (also for the naive
        variants themselves, ``naive_envelope`` included: never a row against itself)."""
        _, _, variant = server.partition("_")
        same = f"naive_{variant}"
        return same if variant and same != server and same in self.by else "naive"

    def ratio_cell(self, server: str, other: str, getter: Getter) -> str:
        value = self.ratio(server, other, getter)
        return "-" if value is None else f"{value:.2f}"


def throughput_lines(table: Table, metric: Getter, title: str, digits: int = 0) -> list[str]:
    """Median, spread, x raw, x naive (on the same server), and the CPU of both processes."""
    head = f"| server | {title} | spread | x raw | x naive | p99 ms | server CPU | loadgen CPU |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for server in table.servers:
        values = table.values(server, metric)
        lines.append(
            f"| {server} | {fmt(median(values), digits)} | {spread(values)} "
            f"| {table.ratio_cell(server, table.baseline, metric)} "
            f"| {table.ratio_cell(server, table.naive_of(server), metric)} "
            f"| {fmt(median(table.values(server, get('latency.p99_ms'))), 1)} "
            f"| {fmt(median(table.values(server, get('server_cpu'))), 2)} "
            f"| {fmt(max(table.values(server, get('loadgen_cpu')), default=None), 2)} |"
        )
    return lines


def deflate_lines(table: Table) -> list[str]:
    """The closed loop with deflate-offering receivers, plus what went over the wire."""
    lines = throughput_lines(table, get("deliveries_per_s"), "deliveries/s")
    lines[0] += " wire bytes/delivery | compressed frames | deflate accepted |"
    lines[1] += "---|---|---|"
    for i, server in enumerate(table.servers, start=2):
        compressed = median(table.values(server, get("compressed_fraction")))
        lines[i] += (
            f" {fmt(median(table.values(server, get('wire_bytes_per_delivery'))), 1)} "
            f"| {fmt(None if compressed is None else 100 * compressed)}% "
            f"| {fmt(median(table.values(server, get('deflate_negotiated'))))} |"
        )
    return lines


def latency_lines(table: Table) -> list[str]:
    p99 = get("latency.p99_ms")
    head = "| server | p50 ms | p99 ms | spread | p99 x raw | losses | server CPU | loadgen CPU |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for server in table.servers:
        values = table.values(server, p99)
        lines.append(
            f"| {server} | {fmt(median(table.values(server, get('latency.p50_ms'))), 2)} "
            f"| {fmt(median(values), 2)} | {spread(values)} "
            f"| {table.ratio_cell(server, table.baseline, p99)} "
            f"| {fmt(sum(table.values(server, get('losses'))))} "
            f"| {fmt(median(table.values(server, get('server_cpu'))), 2)} "
            f"| {fmt(max(table.values(server, get('loadgen_cpu')), default=None), 2)} |"
        )
    return lines


def slow_end(row: Row) -> str:
    ends = row.get("slow") or []
    if not ends:
        return "-"
    end = ends[0]
    if end.get("close_code") is not None:
        return f"closed {end['close_code']}"
    return "dropped (no close frame)" if end.get("disconnected") else "still open"


def slow_lines(off: Table, on: Table) -> list[str]:
    p99 = get("latency.p99_ms")
    head = ("| server | healthy loss % | p99 ms without | p99 ms with | with/without "
            "| slow client | server RSS growth MB |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for server in on.servers:
        ratios = []
        for rep, row in on.by[server].items():
            base = off.by[server].get(rep)
            if base and p99(row) is not None and p99(base):
                ratios.append(p99(row) / p99(base))  # type: ignore[operator]
        ends = sorted({slow_end(r) for r in on.by[server].values()})
        lines.append(
            f"| {server} | {fmt(median(on.values(server, loss_percent)), 2)} "
            f"| {fmt(median(off.values(server, p99)), 2)} "
            f"| {fmt(median(on.values(server, p99)), 2)} "
            f"| {fmt(median(ratios), 2)} | {', '.join(ends)} "
            f"| {fmt(median(on.values(server, rss_growth)), 1)} |"
        )
    return lines


def simple_lines(table: Table, metric: Getter, title: str, digits: int) -> list[str]:
    lines = [f"| server | {title} | spread | x raw | x naive |", "|---|---|---|---|---|"]
    for server in table.servers:
        values = table.values(server, metric)
        lines.append(
            f"| {server} | {fmt(median(values), digits)} | {spread(values)} "
            f"| {table.ratio_cell(server, table.baseline, metric)} "
            f"| {table.ratio_cell(server, 'naive', metric)} |"
        )
    return lines


def case_lines(name: str, rows: list[Row], tables: dict[str, Table]) -> list[str]:
    table = tables[name]
    kind = rows[0].get("kind")
    if name == "slow_on" and "slow_off" in tables:
        return slow_lines(tables["slow_off"], table)
    if kind == "closed" and rows[0].get("deflate"):
        return deflate_lines(table)
    if kind == "closed":
        return throughput_lines(table, get("deliveries_per_s"), "deliveries/s")
    if kind == "open":
        return latency_lines(table)
    if kind == "idle":
        return simple_lines(table, get("kb_per_connection"), "KB per idle connection", 1)
    if kind == "churn":
        return simple_lines(table, get("churn_per_s"), "connects+disconnects/s", 0)
    return []


def problems(rows: list[Row]) -> list[str]:
    """Failed runs, crashed servers and a saturated generator, one line each."""
    out = []
    for row in rows:
        where = f"{row['case']} / {row['server']} / rep {row['rep']}"
        if not row.get("ok"):
            out.append(f"- FAILED {where}: {str(row.get('error'))[:300]}")
        if row.get("server_crashed"):
            out.append(f"- SERVER CRASHED {where}: {row.get('server_log', '')[-300:]}")
        if (row.get("other_cpu") or 0) > OTHER_BUSY:
            out.append(f"- note {where}: other processes/softirq used {row['other_cpu']:.2f} CPU")
        if (row.get("loadgen_cpu") or 0) > LOADGEN_BUSY:
            out.append(f"- note {where}: load generator CPU {row['loadgen_cpu']:.2f}")
    return out


def render(rows: list[Row], servers: Sequence[str], baseline: str) -> str:
    """The whole report as Markdown: one table per case, then problems."""
    by_case: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_case[row["case"]].append(row)
    tables = {name: Table(case_rows, servers, baseline) for name, case_rows in by_case.items()}
    out: list[str] = []
    for name, case_rows in by_case.items():
        if name == "slow_off" and "slow_on" in by_case:
            continue
        paired = name == "slow_on" and "slow_off" in by_case
        title = "slow client: slow_off vs slow_on" if paired else name
        reps = len({r["rep"] for r in case_rows})
        out += ["", f"### {title} ({reps} rep{'s' if reps > 1 else ''})", ""]
        out += case_lines(name, case_rows, tables)
    notes = problems(rows)
    if notes:
        out += ["", "### Problems and notes", "", *notes]
    return "\n".join(out).strip() + "\n"
