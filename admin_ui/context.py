"""Everything one dashboard shares: the manager, the feed, auth and templates.

Not where it is mounted: each page reads that from its request (``admin_ui.urls``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.templating import Jinja2Templates

from admin_ui.audit import AuditLog
from admin_ui.auth import AdminAuth
from admin_ui.feed import Feed
from admin_ui.manager import ManagerLike
from admin_ui.sessions import Sessions
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
