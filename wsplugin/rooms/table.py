"""The room table: every source of per-room options compiled into one first-match table.

The sources, strongest first:

1. ``rooms``: the first matching pattern applies, like a routing table;
2. typed handlers (``@manager.on_publish(pattern)``), the first matching pattern;
3. the ``history`` patterns, the first matching one;
4. the ``presence`` patterns, the first matching one;
5. the ``client_publish`` patterns (any match allows publishing);
6. the global settings.

An option a source leaves unset (``None``) comes from the next one. The sources are compiled
into rules (globs that must all match, and the options that apply) so that one lookup, the
first rule that matches, gives exactly that: a rule per combination of patterns that can
match one room, most specific first. Rules no room can reach are dropped (two globs that can
never match one name, a rule after one with fewer globs), so a table whose patterns are the
same or disjoint compiles to one rule per pattern. History, presence, the endpoint's publish
policy and the typed messages all ask :meth:`RoomTable.options`: one cached lookup per room
name (bounded as :class:`~wsplugin.patterns.PatternRules` bounds it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from wsplugin.patterns import Globs, PatternRules, may_overlap
from wsplugin.rooms import PublishHandler, RoomOptions
from wsplugin.rooms.typed import handler_model

if TYPE_CHECKING:
    from wsplugin.config import Settings

RULE_LIMIT = 10_000
"""Most rules a table may compile to (many overlapping shorthand patterns multiply)."""

Source = Sequence[tuple[str, RoomOptions]]
Rule = tuple[Globs, RoomOptions]
_UNSET = RoomOptions()


def compile_rules(sources: Sequence[Source]) -> list[Rule]:
    """First-match rules equivalent to taking, per source, its first matching pattern (the
    earlier source winning each option); the last rule is the catch-all ``()``."""
    rules: list[Rule] = [((), _UNSET)]
    for source in sources:
        if not source:
            continue
        compiled: list[Rule] = []
        for globs, options in rules:
            for glob, value in (*source, (None, _UNSET)):
                if glob is None:
                    rule = (globs, options)
                elif not all(may_overlap(glob, other) for other in globs):
                    continue  # no room matches both
                else:
                    wider = glob == "*" or glob in globs
                    rule = (globs if wider else (*globs, glob), options.merged(value))
                if any(set(earlier) <= set(rule[0]) for earlier, _ in compiled):
                    continue  # an earlier rule takes every room this one would
                compiled.append(rule)
        if len(compiled) > RULE_LIMIT:
            raise ValueError(f"wsplugin: the room patterns overlap into more than {RULE_LIMIT} "
                             "combinations; declare what applies in one rooms={...} table")
        rules = compiled
    return rules


def pattern_text(globs: Globs) -> str:
    """How a rule's globs are shown: ``chat-*``, ``chat-* & *-vip``, ``*`` for every room."""
    return " & ".join(globs) or "*"


class RoomTable:
    """Room name -> the :class:`RoomOptions` that apply, resolved against the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handlers: dict[str, PublishHandler] = {}
        self.version = 0
        """Bumped by every compile: what was derived from the table is stale."""
        self.options: Callable[[str], RoomOptions] = self._compile()

    # ------------------------------------------------------------------ sources
    def add_handler(self, pattern: str, handler: PublishHandler) -> None:
        """Register a typed handler for ``pattern`` (``ValueError`` for a pattern that has
        one, or a handler whose model contradicts the room's ``publish``)."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"on_publish needs a room pattern like 'chat-*', got {pattern!r}")
        if pattern in self.handlers:
            raise ValueError(f"on_publish({pattern!r}) already has a handler")
        handler_model(handler)  # TypeError if it cannot take (conn, room, msg)
        self.handlers[pattern] = handler
        try:
            self.options = self._compile()
        except ValueError:
            del self.handlers[pattern]
            raise

    def _sources(self) -> list[Source]:
        settings = self.settings
        publish = settings.client_publish
        return [
            list(settings.rooms.items()),
            [(p, RoomOptions(on_publish=h)) for p, h in self.handlers.items()],
            [(p, RoomOptions(history=h)) for p, h in settings.history.items()],
            [(p, RoomOptions(presence=v)) for p, v in settings.presence.items()],
            [(p, RoomOptions(client_publish=True)) for p in publish]
            if isinstance(publish, tuple) else [],
        ]

    # ------------------------------------------------------------------ compile
    def _compile(self) -> Callable[[str], RoomOptions]:
        rules = [(globs, self._resolve(globs, options))
                 for globs, options in compile_rules(self._sources())]
        default = rules.pop()[1]  # the catch-all: rooms no pattern matches
        self.rules: PatternRules[RoomOptions] = PatternRules(rules, default)
        every = [options for _, options in rules] + [default]
        self.keeps_history = any(o.history is not None for o in every)
        self.tracks_presence = any(o.presence is not None for o in every)
        self.has_message_models = any(o.message is not None for o in every)
        self.version += 1
        return self.rules.get

    def _resolve(self, globs: Globs, options: RoomOptions) -> RoomOptions:
        """The options of a rule with the settings' part filled in: ``client_publish`` (a
        handler allows it), ``authorize``, and ``publish`` from a handler's annotation."""
        where = f"rooms matching {pattern_text(globs)!r}"
        handler, model = options.on_publish, options.publish
        if handler is not None:
            annotated = handler_model(handler)
            if model is None:
                model = annotated
            elif annotated is not None and annotated is not model:
                raise ValueError(f"wsplugin: {where}: the publish handler takes "
                                 f"{annotated.__name__} but publish={model.__name__}")
        publish = options.client_publish
        if publish is None:
            publish = True if handler is not None else self._publish_default()
        elif publish is False and handler is not None:
            raise ValueError(f"wsplugin: {where}: client_publish=False, but a publish handler "
                             "is registered for them (a handler allows publishing)")
        authorize = options.authorize if options.authorize is not None \
            else self.settings.authorize
        return replace(options, client_publish=publish, publish=model, authorize=authorize)

    def _publish_default(self) -> bool:
        """``client_publish`` outside its patterns: True, or, when False, an ``on_message``
        hook decides each message."""
        publish = self.settings.client_publish
        if publish is True:
            return True
        return publish is False and self.settings.on_message is not None

    # ------------------------------------------------------------------ reading
    def entries(self) -> list[tuple[str, RoomOptions]]:
        """The compiled rules as (pattern text, options), the catch-all ``*`` last."""
        return [(pattern_text(globs), options) for globs, options in self.rules.rules] + [
            ("*", self.rules.default)]
