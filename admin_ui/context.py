"""Everything one dashboard shares: the manager, the feed, auth, sessions and templates.

Not where it is mounted: each page reads that from its request (``admin_ui.urls``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.templating import Jinja2Templates

from admin_ui.audit import AuditLog
from admin_ui.auth import AdminAuth
from admin_ui.feed import Feed
from admin_ui.manager import ManagerLike
from admin_ui.revocation import MemoryRevocations, Revocations
from admin_ui.sessions import Sessions
from admin_ui.shared_throttle import SharedThrottle
from admin_ui.throttle import Throttle


@dataclass(eq=False)
class AdminContext:
    manager: ManagerLike
    auth: AdminAuth
    sessions: Sessions
    audit: AuditLog
    feed: Feed
    templates: Jinja2Templates
    generated_token: str | None = None
    throttle: Throttle = field(default_factory=Throttle)
    """Failed logins in this process (the limits, and the fallback of ``shared_throttle``)."""
    shared_throttle: SharedThrottle | None = None
    """Failed logins counted cluster-wide in Redis (with the Redis backend)."""
    revocations: Revocations = field(default_factory=MemoryRevocations)
    """Sessions ended by logging out: in this process, or in Redis for the cluster."""
    session_recheck: float = 5.0
    """Seconds between checks, while a stream is open, that its session was not revoked."""
