"""Room patterns: which options apply to a room, by glob, the first match in order."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

_CACHE_LIMIT = 10_000


class PatternRules(Generic[T]):
    """Room name -> the value of the first matching glob pattern (or None); cached per name."""

    __slots__ = ("_cache", "patterns")

    def __init__(self, patterns: Mapping[str, T]) -> None:
        self.patterns = dict(patterns)
        self._cache: dict[str, T | None] = {}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def get(self, room: str) -> T | None:
        """The value for ``room``: the first matching pattern, in the order given."""
        try:
            return self._cache[room]
        except KeyError:
            pass
        value = next((v for p, v in self.patterns.items() if fnmatch.fnmatchcase(room, p)), None)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[room] = value
        return value
