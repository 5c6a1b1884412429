"""This process's identity in the cluster: one object that every part of the broker reads.

No part keeps a copy of the node id: the registry, the command routing, the event relay,
the history rooms and the event bus all read :attr:`Node.id` when they need it, so
:meth:`Node.renew` (a broker built before a fork, e.g. ``gunicorn --preload``) renames the
node everywhere at once.
"""

from __future__ import annotations

import os
import socket
import time
import uuid


class Node:
    """Id, host, pid and start time of this node (``id_bytes``: the id as own echoes carry it)."""

    __slots__ = ("host", "id", "id_bytes", "pid", "started")

    def __init__(self, node_id: str | None = None) -> None:
        self.host = socket.gethostname()
        self.renew(node_id)

    def renew(self, node_id: str | None = None) -> None:
        """Become a new node (a fresh id unless one is given) in this process, from now."""
        self.id = node_id or uuid.uuid4().hex[:12]
        self.id_bytes = self.id.encode()
        self.pid = os.getpid()
        self.started = time.time()

    @property
    def forked(self) -> bool:
        """Built in another process (before a fork): this process must be a new node."""
        return os.getpid() != self.pid
