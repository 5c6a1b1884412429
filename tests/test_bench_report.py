"""bench/report.py: the "x naive" column compares with the naive manager on the same server."""

from __future__ import annotations

from bench.report import Table, get


def test_x_naive_is_taken_against_the_same_server() -> None:
    values = {"naive": 10.0, "naive_envelope": 8.0, "naive_hypercorn": 4.0,
              "wsplugin_hypercorn": 5.0, "wsplugin": 30.0, "wsplugin_legacy": 6.0}
    rows = [{"server": name, "rep": 0, "ok": True, "deliveries_per_s": value}
            for name, value in values.items()]
    table = Table(rows, list(values), "naive")
    metric = get("deliveries_per_s")
    assert table.ratio_cell("wsplugin_hypercorn", table.naive_of("wsplugin_hypercorn"),
                            metric) == "1.25"
    assert table.naive_of("wsplugin") == "naive"
    assert table.naive_of("wsplugin_legacy") == "naive"  # naive_legacy did not run
    assert table.naive_of("naive_envelope") == "naive"  # never a row against itself
    assert table.naive_of("naive_hypercorn") == "naive"
