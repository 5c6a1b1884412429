"""``max_connections_per_user`` on this node: the slots claimed by handshakes in progress.

A handshake claims a slot (the id its connection will have) before it is accepted. From
the moment the connection opens, the hub's per-user index counts it and the claim is
settled; a handshake that fails releases it. This node refuses at once when a user's open
connections and claims reach the limit; the broker then counts the whole cluster (the
in-memory broker: nothing more to count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Claim:
    """A slot held for one handshake: the connection id it opens with, and the user whose
    slot it holds (``None``: it holds none: no user, or no ``max_connections_per_user``)."""

    connection_id: str
    user_id: str | None
    settled: bool = False
    """The connection opened (it holds the slot now) or the claim was released."""


class UserSlots:
    """Claims in progress per user, beside a count of the user's open local connections."""

    __slots__ = ("_claims", "_open")

    def __init__(self, open_count: Callable[[str], int]) -> None:
        self._open = open_count
        self._claims: dict[str, set[str]] = {}

    def claim(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Hold a slot for ``connection_id`` unless ``user_id`` has ``limit`` here already."""
        claims = self._claims.get(user_id)
        if self._open(user_id) + (len(claims) if claims else 0) >= limit:
            return False
        self._claims.setdefault(user_id, set()).add(connection_id)
        return True

    def settle(self, user_id: str, connection_id: str) -> None:
        """The claim ended: its connection opened, or its handshake failed."""
        claims = self._claims.get(user_id)
        if claims is None:
            return
        claims.discard(connection_id)
        if not claims:
            del self._claims[user_id]

    def __len__(self) -> int:
        """Claims in progress (handshakes between the check and the open)."""
        return sum(len(claims) for claims in self._claims.values())
