"""The node's counters, in one place: what metrics, ``stats()`` and the admin read.

:class:`Counters` are bumped on the hot path (one attribute bump per event, shared by every
connection). :class:`Tally` keeps lifecycle counts: handshakes accepted and refused, closes
by code, history recoveries; each is one dictionary bump, once per connection or recovery
(never per message). The delivery latency histogram is ``None`` (and costs one attribute
test per broadcast) until metrics are enabled, see :mod:`wsplugin.metrics`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Literal

CLOSE_CODES = (1000, 1001, 1005, 1006, 1008, 1009, 1011, 1012, 4000, 4001, 4003, 4008,
               4029)
"""The close codes counted one by one; every other code is counted as ``other``."""

REFUSAL_REASONS = ("auth", "origin", "bad_room", "limit", "user_limit")
"""Why a handshake was refused (``auth``: the authenticate or authorize hook said no;
``user_limit``: the user already has ``max_connections_per_user`` connections)."""

RefusalReason = Literal["auth", "origin", "bad_room", "limit", "user_limit"]
Source = Literal["local", "remote"]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
"""Upper bounds in seconds of the delivery latency histogram (``+Inf`` is implied)."""

RECOVERY_OUTCOMES = ("recovered", "not_recovered", "reset")
"""How a history recovery ended: every missed message delivered; ``recovered: false``; or
``recovered: true`` and then a ``reset`` (the stream lost messages while they were read)."""

RecoveryOutcome = Literal["recovered", "not_recovered", "reset"]

RECOVERY_SIZE_BUCKETS = (0.0, 1.0, 10.0, 50.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
"""Upper bounds of the recovery size histogram, in messages replayed."""

RECOVERY_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                            30.0, 60.0)
"""Upper bounds in seconds of the recovery duration histogram."""

_CLOSE_KEYS = {code: str(code) for code in CLOSE_CODES}


class Counters:
    """Node-wide message counters, shared by every connection (one attribute bump per event)."""

    __slots__ = ("bytes_in", "bytes_out", "dropped", "messages_in", "messages_out",
                 "presence_diffs", "publish_errors", "slow_closes")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.slow_closes = 0
        self.publish_errors = 0
        self.presence_diffs = 0  # presence_diff frames handed to local members

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Histogram:
    """Fixed buckets, a sum and a count: what a Prometheus histogram needs, nothing else."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations <= bound)`` pairs, ``+Inf`` last."""
        total = 0
        pairs = []
        for bound, count in zip((*map(repr, self.buckets), "+Inf"), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


class DeliveryLatency:
    """Time from a publish (or its arrival from another node) to its last local write.

    A broadcast writes eagerly to idle sockets; frames corked on the fast path leave at the
    end of the loop iteration (``WebSocketManager._flush``). So a broadcast that left corked
    frames is observed at that flush, any other right away. Connections with a backlog get
    the message queued: the latency measures until it is written *or queued* for every
    local member, which is what the hub controls (a slow reader's own lag is its queue).
    """

    __slots__ = ("_pending", "local", "remote")

    def __init__(self) -> None:
        self.local = Histogram()
        self.remote = Histogram()
        self._pending: list[tuple[float, Histogram]] = []

    def delivered(self, started: float, source: Source, flush_pending: bool) -> None:
        histogram = self.local if source == "local" else self.remote
        if flush_pending:
            self._pending.append((started, histogram))
        else:
            histogram.observe(time.perf_counter() - started)

    def flushed(self) -> None:
        if not self._pending:
            return
        now = time.perf_counter()
        pending, self._pending = self._pending, []
        for started, histogram in pending:
            histogram.observe(now - started)


class RecoveryTally:
    """History recoveries: how each ended, how many messages it replayed, how long it took
    (from the join to the hand-over to live delivery). One update per recovery."""

    __slots__ = ("messages", "outcomes", "seconds")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(RECOVERY_OUTCOMES, 0)
        self.messages = Histogram(RECOVERY_SIZE_BUCKETS)
        self.seconds = Histogram(RECOVERY_SECONDS_BUCKETS)

    def record(self, outcome: RecoveryOutcome, messages: int, seconds: float) -> None:
        self.outcomes[outcome] += 1
        self.messages.observe(messages)
        self.seconds.observe(seconds)


class Tally:
    """Per-manager lifecycle counts (see the module docstring)."""

    __slots__ = ("accepted", "closes", "latency", "recoveries", "refused")

    def __init__(self) -> None:
        self.accepted = 0
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.closes: dict[str, int] = dict.fromkeys([*_CLOSE_KEYS.values(), "other"], 0)
        self.latency: DeliveryLatency | None = None
        self.recoveries = RecoveryTally()

    def refuse(self, reason: RefusalReason) -> None:
        self.refused[reason] += 1

    def closed(self, code: int) -> None:
        self.closes[_CLOSE_KEYS.get(code, "other")] += 1

    def delivered(self, started: float, source: Source, flush_pending: object) -> None:
        """A broadcast was handed to every local member (``started``: ``perf_counter()``)."""
        latency = self.latency
        if latency is not None:
            latency.delivered(started, source, bool(flush_pending))

    def flushed(self) -> None:
        """The end-of-iteration flush wrote the corked frames."""
        latency = self.latency
        if latency is not None:
            latency.flushed()
