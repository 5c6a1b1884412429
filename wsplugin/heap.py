"""The process's garbage collector and a server of many long-lived connections.

A full collection scans every container object the process holds; with tens of thousands
of connections that is millions of objects and a pause of a second or more on a small
machine, during which nothing is delivered. :func:`freeze_startup` moves what exists when
the manager starts (the app's modules, classes, routes, models: objects that live as long
as the process) to the permanent generation, once per process, so full collections stop
scanning them. What connections allocate is not frozen: a closed connection's objects form
cycles (the server's protocol objects among them) that only a collection frees.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("wsplugin")

_frozen = False


def freeze_startup() -> int:
    """Collect once, then freeze every object alive now; a no-op after the first call of
    the process (and under ``gc.disable()``, the application's own choice). Returns how many
    objects are frozen."""
    global _frozen
    if _frozen or not gc.isenabled():
        return gc.get_freeze_count()
    _frozen = True
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("wsplugin: %d start-up objects frozen out of the garbage collector's scans",
                 frozen)
    return frozen
