"""Signed, stateless session cookies and the CSRF tokens derived from them.

A session is ``base64(json).base64(hmac)``: any worker that knows the key can check it, so
logins survive a multi-process server. The CSRF token is an HMAC of the session's nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from admin_ui.auth import Principal, Role

COOKIE = "wsadmin_session"
LIFETIME = 12 * 3600.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, key: bytes, lifetime: float = LIFETIME) -> None:
        self._key = key
        self.lifetime = lifetime

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, principal: Principal) -> str:
        """A cookie value for a freshly logged-in principal."""
        body = {
            "n": principal.name,
            "r": principal.role,
            "e": time.time() + self.lifetime,
            "s": secrets.token_urlsafe(12),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return payload + "." + self._sign(payload)

    def read(self, cookie: str) -> Principal | None:
        """The principal of a valid, unexpired cookie; None otherwise."""
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(body, dict) or float(body.get("e", 0)) < time.time():
            return None
        role: Role = "viewer" if body.get("r") == "viewer" else "operator"
        return Principal(str(body.get("n")), role, "session", str(body.get("s", "")))

    def csrf_token(self, principal: Principal) -> str:
        """The token the page must echo in ``X-CSRF-Token`` for every POST."""
        seed = f"csrf:{principal.via}:{principal.name}:{principal.nonce}"
        return self._sign(seed)

    def check_csrf(self, principal: Principal, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(principal).encode(), token.encode())
