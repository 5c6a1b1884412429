"""The process's garbage collector and a server of many long-lived connections.

A full collection scans every container object the process holds; with 20,000 connections
that is ~1.5 million objects and a pause of up to a second or two on a small machine,
during which nothing is delivered. Python starts one whenever the objects that survived
two younger collections since the last full one reach a quarter of the old generation;
with its default first threshold (700 allocations) every object that lives a few seconds
(a request's records, a keep-alive ping's timer) survives two collections and counts.

:func:`tune` (the manager's start, ``gc_tuning=True``, once per process) does two things:

- it freezes what exists then (the app's modules, classes, routes, models: objects that
  live as long as the process) out of every later scan (``gc.freeze()``);
- if the app kept Python's thresholds (700, 10, 10), it raises the first to
  :data:`THRESHOLD0`: a young collection then happens every 50,000 net allocations
  (a few milliseconds each), so short- and medium-lived objects die before one and are
  never promoted, and full collections become rare (measured in docs/benchmarks.md:
  none in a minute with the dashboard open at 19,800 connections, against one to four).

What connections allocate is not frozen. An ended connection is freed by reference
counting, not left to the collector: the connection lets go of its writer
(:meth:`wsplugin.delivery.connection.Connection.release`) and the scope lets go of the
server's ``send`` when the connection's app returns; either one kept would be a cycle,
and with long-lived connections only a full collection frees one. What the server keeps
in cycles of its own (uvicorn's HTTP protocol of each upgrade, websockets' parser) waits
for a collection (see docs/benchmarks.md, Soak).
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("wsplugin")

PYTHON_DEFAULTS = (700, 10, 10)
THRESHOLD0 = 50_000

_tuned = False


def tune() -> tuple[int, tuple[int, int, int]]:
    """Freeze the start-up heap and raise the first threshold (see the module docstring),
    once per process; nothing under ``gc.disable()`` (the application's own choice).
    Returns how many objects are frozen and the thresholds."""
    global _tuned
    if _tuned or not gc.isenabled():
        return gc.get_freeze_count(), gc.get_threshold()
    _tuned = True
    gc.collect()
    gc.freeze()
    if gc.get_threshold() == PYTHON_DEFAULTS:
        gc.set_threshold(THRESHOLD0, *PYTHON_DEFAULTS[1:])
    frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
    logger.debug("wsplugin: %d start-up objects frozen, gc thresholds %s", frozen, thresholds)
    return frozen, thresholds
