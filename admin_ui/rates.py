"""Per-second rates from cumulative counters, computed from deltas between samples."""

from __future__ import annotations

from collections.abc import Mapping


class RateMeter:
    def __init__(self) -> None:
        self._previous: dict[str, int] = {}
        self._at: float | None = None
        self.rates: dict[str, float] = {}

    def update(self, counters: Mapping[str, int], now: float) -> dict[str, float]:
        """Record a sample; return the rates since the previous one (0 on the first)."""
        elapsed = now - self._at if self._at is not None else 0.0
        if elapsed > 0:
            self.rates = {
                key: round(max(0, value - self._previous.get(key, value)) / elapsed, 1)
                for key, value in counters.items()
            }
        elif self._at is None:
            self.rates = dict.fromkeys(counters, 0.0)
        self._previous = dict(counters)
        self._at = now
        return self.rates
