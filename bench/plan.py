"""What the orchestrator runs: the servers and, per mode, the cases (scenario + repetitions)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """A benchmark server: its script in ``bench/servers``, protocol and client options."""

    script: str
    protocol: str
    args: tuple[str, ...] = ()
    batch: bool = False
    root: str | None = None
    """Another checkout to run the script from (its own wsplugin): an A/B against it."""

    @property
    def is_wsplugin(self) -> bool:
        return self.script == "wsplugin_server.py"


SERVERS: dict[str, ServerSpec] = {
    "raw": ServerSpec("raw_websockets.py", "raw"),
    "naive": ServerSpec("naive.py", "raw"),
    "naive_envelope": ServerSpec("naive_envelope.py", "envelope"),
    "wsplugin": ServerSpec("wsplugin_server.py", "envelope"),
    "wsplugin_batch": ServerSpec("wsplugin_server.py", "envelope", batch=True),
    # compression=False: deflate-offering clients get uncompressed frames.
    "wsplugin_nocompress": ServerSpec("wsplugin_server.py", "envelope",
                                      args=("--compression", "false")),
    # uvicorn's other sans-I/O protocol, wsproto, which has a fast path too.
    "naive_wsproto": ServerSpec("naive.py", "raw", args=("--ws", "wsproto")),
    "wsplugin_wsproto": ServerSpec("wsplugin_server.py", "envelope", args=("--ws", "wsproto")),
    # The ASGI path, where no fast path applies: hypercorn, and uvicorn's legacy
    # websockets protocol; each server compresses per recipient.
    "naive_hypercorn": ServerSpec("naive.py", "raw", args=("--server", "hypercorn")),
    "wsplugin_hypercorn": ServerSpec("wsplugin_server.py", "envelope",
                                     args=("--server", "hypercorn")),
    "naive_legacy": ServerSpec("naive.py", "raw", args=("--ws", "websockets")),
    "wsplugin_legacy": ServerSpec("wsplugin_server.py", "envelope", args=("--ws", "websockets")),
    # Not in the default set: the admin dashboard mounted (it measures its overhead).
    "wsplugin_admin": ServerSpec("wsplugin_server.py", "envelope", args=("--admin",)),
    # Not in the default set: presence configured for other rooms (a plain room pays nothing).
    "wsplugin_other_presence": ServerSpec("wsplugin_server.py", "envelope",
                                          args=("--other-presence",)),
    # Not in the default set: typed messages in the benchmark's room (a small pydantic model
    # validates each client publish and types what members receive): the cost of validation.
    "wsplugin_typed": ServerSpec("wsplugin_server.py", "envelope", args=("--typed",)),
}
DEFAULT_SERVERS = ("raw", "naive", "naive_envelope", "wsplugin", "wsplugin_batch")
BASELINE = "raw"


@dataclasses.dataclass(frozen=True)
class Case:
    """One scenario row of the table, run ``reps`` times against every selected server."""

    name: str
    scenario: dict[str, Any]
    reps: int = 3
    servers: tuple[str, ...] | None = None  # None: every selected server
    wsplugin_args: tuple[str, ...] = ()  # extra arguments for wsplugin servers in this case


def window_for(n: int) -> int:
    """Closed-loop window: about 4,000 deliveries in flight, and at least 4 messages."""
    return max(4, 4000 // n)


def closed(n: int, duration: float, reps: int, warmup: float = 1.0) -> Case:
    scenario = {"kind": "closed", "n": n, "duration": duration, "warmup": warmup,
                "window": window_for(n)}
    return Case(f"closed_n{n}", scenario, reps)


def closed_deflate(n: int, duration: float, reps: int, warmup: float = 1.0) -> Case:
    """The closed loop with receivers that offer permessage-deflate like a browser (and
    inflate every compressed frame), against servers that accept it: plain uvicorn, the
    raw websockets server at its default compression."""
    scenario = {**closed(n, duration, reps, warmup).scenario, "deflate": True}
    return Case(f"closed_n{n}_deflate", scenario, reps, DEFLATE_SERVERS)


DEFLATE_SERVERS = ("raw", "naive", "wsplugin", "wsplugin_nocompress", "naive_wsproto",
                   "wsplugin_wsproto", "naive_hypercorn", "wsplugin_hypercorn", "naive_legacy",
                   "wsplugin_legacy")


def latency(n: int, rate: float, duration: float, reps: int) -> Case:
    scenario = {"kind": "open", "n": n, "rate": rate, "duration": duration, "warmup": 1.0}
    return Case(f"latency_n{n}_{rate:g}hz", scenario, reps)


# The slow-client pair: the same open-loop traffic without and with one receiver that never
# reads. 30 messages/s of ~1 KB to 1,000 receivers (30k deliveries/s, well under every
# server's capacity); the slow client's kernel buffers (server SO_SNDBUF 64 KiB, its own
# SO_RCVBUF 4 KiB) fill after ~130 messages, and wsplugin's queue is set to 100 messages so
# the policy triggers within the run (the default, 1,000, would take ~40 s at this rate).
SLOW_TRAFFIC = {"kind": "open", "n": 1000, "rate": 30.0, "size": 1000, "warmup": 1.0}
SLOW_QUEUE = ("--max-queue-messages", "100")


def slow_pair(duration: float, reps: int, servers: tuple[str, ...] | None = None) -> list[Case]:
    return [
        Case("slow_off", {**SLOW_TRAFFIC, "duration": duration, "slow": 0}, reps, servers,
             SLOW_QUEUE),
        Case("slow_on", {**SLOW_TRAFFIC, "duration": duration, "slow": 1}, reps, servers,
             SLOW_QUEUE),
    ]


def idle(n: int, reps: int) -> Case:
    return Case(f"idle_n{n}", {"kind": "idle", "n": n, "warmup": 2.0}, reps)


def churn(duration: float, reps: int, concurrency: int = 50) -> Case:
    scenario = {"kind": "churn", "duration": duration, "concurrency": concurrency}
    return Case("churn", scenario, reps)


def cases(mode: str) -> list[Case]:
    """The cases of ``smoke`` (<30 s, CI), ``quick`` (a few minutes) or ``full``."""
    if mode == "smoke":
        only = ("wsplugin",)
        return [
            Case("closed_n20", {"kind": "closed", "n": 20, "duration": 0.5, "warmup": 0.2,
                                "window": 4}, 1),
            Case("slow_on", {**SLOW_TRAFFIC, "n": 20, "duration": 1.0, "warmup": 0.2,
                             "slow": 1, "drain": 1.0}, 1, only, SLOW_QUEUE),
            Case("idle_n50", {"kind": "idle", "n": 50, "warmup": 0.2}, 1, only),
            Case("churn", {"kind": "churn", "duration": 0.5, "concurrency": 10}, 1, only),
        ]
    if mode == "quick":
        return [
            closed(1000, 3.0, 3),
            closed_deflate(1000, 3.0, 3),
            latency(1000, 10.0, 4.0, 3),
            *slow_pair(12.0, 1, ("raw", "naive", "wsplugin")),
            idle(5000, 1),
            churn(3.0, 1),
        ]
    return [
        closed(100, 5.0, 3),
        closed(1000, 5.0, 3),
        closed_deflate(1000, 5.0, 3),
        closed(5000, 5.0, 3, warmup=2.0),
        closed(10000, 5.0, 3, warmup=2.0),
        latency(1000, 10.0, 10.0, 3),
        latency(10000, 5.0, 10.0, 3),
        *slow_pair(15.0, 3),
        idle(5000, 3),
        churn(5.0, 3),
    ]
