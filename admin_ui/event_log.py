"""The dashboard's event log: one bounded ring per kind, so a flood of one kind (a
broadcast per message) never evicts the rare ones (a kick, a slow close)."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Collection, Iterator

from wsplugin.events import Event

Logged = tuple[int, Event]
"""An event and its sequence number (increasing across kinds)."""


class EventLog:
    """At most ``per_kind`` events of each kind, the newest."""

    def __init__(self, per_kind: int = 500) -> None:
        self.per_kind = per_kind
        self.rings: dict[str, deque[Logged]] = {}

    def append(self, seq: int, event: Event) -> None:
        ring = self.rings.get(event.kind)
        if ring is None:
            ring = self.rings[event.kind] = deque(maxlen=self.per_kind)
        ring.append((seq, event))

    def __len__(self) -> int:
        return sum(len(ring) for ring in self.rings.values())

    def newest(self, limit: int, after: int = 0,
               kinds: Collection[str] | None = None) -> list[Logged]:
        """Up to ``limit`` events with ``seq > after`` (of ``kinds``), newest first."""
        rings = [ring for kind, ring in self.rings.items() if kinds is None or kind in kinds]
        merged = heapq.merge(*(_after(ring, after) for ring in rings),
                             key=lambda item: -item[0])
        return list(itertools.islice(merged, max(0, limit)))

    def newest_each(self, limit: int, after: int) -> list[Logged]:
        """Up to ``limit`` events of every kind with ``seq > after``, newest first: what a
        dashboard is sent per tick (the rare kinds are never crowded out)."""
        merged = heapq.merge(*(itertools.islice(_after(ring, after), limit)
                               for ring in self.rings.values()), key=lambda item: -item[0])
        return list(merged)


def _after(ring: deque[Logged], after: int) -> Iterator[Logged]:
    for item in reversed(ring):
        if item[0] <= after:
            return
        yield item
