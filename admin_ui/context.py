"""Everything one mounted dashboard shares: the manager, the feed, auth and templates."""

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
    path: str  # where it is mounted, without a trailing slash: "/ws-admin"
    auth: AdminAuth
    sessions: Sessions
    audit: AuditLog
    feed: Feed
    templates: Jinja2Templates
    generated_token: str | None = None
    throttle: Throttle = field(default_factory=Throttle)

    def url(self, suffix: str = "/") -> str:
        return self.path + suffix
