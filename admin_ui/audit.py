"""The audit log: who did what, when, to whom. Bounded in memory, and sent to logging."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from admin_ui.auth import Principal

logger = logging.getLogger("wsplugin.audit")

DETAIL_LIMIT = 200


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action: who (actor, role), what (action), to whom (target), and how it went."""

    seq: int
    time: float
    actor: str
    role: str
    action: str
    target: str
    detail: str
    result: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class AuditLog:
    def __init__(self, size: int = 500) -> None:
        self.entries: deque[AuditEntry] = deque(maxlen=size)
        self.seq = 0

    def record(
        self, who: Principal, action: str, target: str, detail: str = "", result: str = "ok"
    ) -> AuditEntry:
        self.seq += 1
        entry = AuditEntry(
            seq=self.seq,
            time=time.time(),
            actor=who.name,
            role=who.role,
            action=action,
            target=target,
            detail=shorten(detail),
            result=result,
        )
        self.entries.append(entry)
        logger.info(
            "admin %s (%s) %s %s: %s -> %s",
            who.name,
            who.role,
            action,
            target,
            entry.detail,
            result,
            extra={"audit": entry.to_dict()},
        )
        return entry

    def newest(self, limit: int) -> list[AuditEntry]:
        """Newest first."""
        items = list(self.entries)[-limit:] if limit > 0 else []
        return items[::-1]

    def since(self, seq: int, limit: int) -> list[AuditEntry]:
        """Entries after ``seq``, newest first, at most ``limit``."""
        fresh = [entry for entry in self.entries if entry.seq > seq]
        return fresh[::-1][:limit]
