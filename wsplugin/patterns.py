"""Room globs: which rule applies to a room (the first whose globs all match, cached per name),
and whether two globs can match one room at all.

Globs are :mod:`fnmatch` patterns, case-sensitive: ``*``, ``?``, ``[seq]``, ``[!seq]``. This
is the one place room names are matched against them (see :mod:`wsplugin.rooms.table`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from wsplugin.protocol import ROOM_PATTERN

T = TypeVar("T")

_CACHE_LIMIT = 10_000

Globs = tuple[str, ...]
"""A rule's globs: a room must match every one (``()`` matches every room)."""


class PatternRules(Generic[T]):
    """Room name -> the value of the first rule whose globs all match (else ``default``).

    One dict lookup per room name once seen; the cache holds at most 10,000 names (it is
    cleared when full), so rooms named by clients cannot grow it without bound.
    """

    __slots__ = ("_cache", "default", "rules")

    def __init__(self, rules: Iterable[tuple[Globs, T]], default: T) -> None:
        self.rules: tuple[tuple[Globs, T], ...] = tuple(rules)
        self.default = default
        self._cache: dict[str, T] = {}

    def get(self, room: str) -> T:
        """The value for ``room``: the first matching rule, in the order given."""
        try:
            return self._cache[room]
        except KeyError:
            pass
        value = next((v for globs, v in self.rules
                      if all(fnmatch.fnmatchcase(room, g) for g in globs)), self.default)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[room] = value
        return value


# ----------------------------------------------------------------------- overlap
ROOM_CHARS = frozenset(c for c in map(chr, range(128)) if ROOM_PATTERN.fullmatch(c))
"""The characters a room name may have."""

Token = frozenset[str] | None
"""One position of a glob: the room characters it may hold, or ``None`` for ``*``."""


def _tokens(glob: str) -> list[Token]:
    """``glob`` as tokens: ``None`` for ``*``, or the room characters one position may hold."""
    tokens: list[Token] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
        elif c == "?":
            tokens.append(ROOM_CHARS)
        elif c == "[" and (end := _class_end(glob, i)) is not None:
            bracket = glob[i - 1:end + 1]
            tokens.append(frozenset(ch for ch in ROOM_CHARS if fnmatch.fnmatchcase(ch, bracket)))
            i = end + 1
        else:
            tokens.append(frozenset((c,)) & ROOM_CHARS)
    return tokens


def _class_end(glob: str, start: int) -> int | None:
    """Where the ``[`` before ``start`` closes, as :func:`fnmatch.translate` reads it."""
    j = start
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1
    end = glob.find("]", j)
    return None if end < 0 else end


def may_overlap(first: str, second: str) -> bool:
    """True if some string of room characters matches both globs (both are read exactly;
    the 128-character limit of names is not checked, so this may say True for globs whose
    only common names are longer)."""
    a, b = _tokens(first), _tokens(second)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        todo.extend(_steps(a, b, i, j))
    return False


def _steps(a: Sequence[Token], b: Sequence[Token], i: int, j: int) -> list[tuple[int, int]]:
    """The states one step from ``(i, j)`` when matching one string against both globs."""
    steps = []
    x: Token = a[i] if i < len(a) else frozenset()  # empty: no character can follow
    y: Token = b[j] if j < len(b) else frozenset()
    if x is None:
        steps.append((i + 1, j))  # the star matches nothing more
        if y:
            steps.append((i, j + 1))  # the star takes a character b's token allows
    if y is None:
        steps.append((i, j + 1))
        if x:
            steps.append((i + 1, j))
    if x and y and x & y:
        steps.append((i + 1, j + 1))
    return steps


def all_overlap(globs: Sequence[str]) -> bool:
    """True unless two of ``globs`` can never match the same room (checked pairwise)."""
    return all(may_overlap(g, h) for k, g in enumerate(globs) for h in globs[k + 1:])


def example_room(text: str) -> str | None:
    """A room name every glob of ``text`` (globs joined by `` & ``) matches, or None."""
    globs = [g for g in text.split(" & ") if g]
    if not globs or globs == ["*"]:
        return "lobby"
    name = "".join("1" if t is None else min(t, key=lambda c: (not c.isalnum(), c)) if t else "?"
                   for t in _tokens(globs[0]))
    ok = ROOM_PATTERN.fullmatch(name) is not None and all(
        fnmatch.fnmatchcase(name, g) for g in globs)
    return name if ok else None


def pattern_map(value: Any, setting: str, kind: type[T],
                fields: frozenset[str]) -> dict[str, T]:
    """A setting that maps room patterns to ``kind`` instances (or dicts of its ``fields``),
    checked: ``ValueError`` naming ``setting`` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{setting} must map room patterns to {kind.__name__}(...)")
    rules: dict[str, T] = {}
    for pattern, spec in value.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{setting} patterns must be non-empty strings, got {pattern!r}")
        rules[pattern] = _one(spec, f"{setting}[{pattern!r}]", kind, fields)
    return rules


def _one(spec: Any, where: str, kind: type[T], fields: frozenset[str]) -> T:
    if isinstance(spec, Mapping):
        unknown = set(spec) - fields
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        spec = _build(kind, spec)
    if not isinstance(spec, kind):
        raise ValueError(f"{where} must be {kind.__name__}(...) or a dict, got {spec!r}")
    return spec


def _build(kind: Callable[..., T], fields: Mapping[str, Any]) -> T:
    built: T = kind(**fields)
    return built
