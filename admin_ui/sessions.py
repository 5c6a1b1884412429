"""Signed session cookies, bound to the credential that logged in, and their CSRF tokens.

A session is ``base64(json).base64(hmac)``: any worker that knows the key can check its
signature, so logins survive a multi-process server. The body names the principal, the
expiry, a random nonce (the session's id: the CSRF token is an HMAC of it, and logging out
revokes it, see ``admin_ui.revocation``) and the *fingerprint* of the credential used to
log in: an HMAC of the role and the credential under the signing key, never the credential
itself. A session is valid only while its fingerprint is one of the configured
credentials': changing a token or a password ends the sessions opened with it, even when
the signing key is an explicit ``secret`` that does not change with the credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable

from admin_ui.auth import Credential, Principal, Role

COOKIE = "wsadmin_session"
LIFETIME = 12 * 3600.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_id(principal: Principal) -> str:
    """The name a session is revoked under: a hash of its nonce (not the nonce itself)."""
    return hashlib.sha256(b"wsplugin-admin-session:" + principal.nonce.encode()).hexdigest()[:32]


class Sessions:
    def __init__(
        self,
        key: bytes,
        credentials: Iterable[tuple[Role, Credential]] = (),
        lifetime: float = LIFETIME,
    ) -> None:
        self._key = key
        self.lifetime = lifetime
        self._fingerprints = frozenset(self.fingerprint(role, c) for role, c in credentials)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def fingerprint(self, role: Role, credential: Credential) -> str:
        """A keyed hash of a credential and its role: names it without revealing it."""
        material = json.dumps(["credential", role, credential], separators=(",", ":"))
        return self._sign(material)[:22]

    def issue(self, principal: Principal, credential: Credential) -> str:
        """A cookie value for a principal who just logged in with ``credential``."""
        body = {
            "n": principal.name,
            "r": principal.role,
            "e": time.time() + self.lifetime,
            "s": secrets.token_urlsafe(12),
            "f": self.fingerprint(principal.role, credential),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return payload + "." + self._sign(payload)

    def read(self, cookie: str) -> Principal | None:
        """The principal of a well-signed, unexpired cookie whose credential is still
        configured; None otherwise. (Whether it was revoked is ``admin_ui.revocation``'s.)"""
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
            expires = float(body["e"])
        except (ValueError, TypeError, KeyError):
            return None
        if expires < time.time() or body.get("f") not in self._fingerprints:
            return None
        role: Role = "viewer" if body.get("r") == "viewer" else "operator"
        nonce = str(body.get("s", ""))
        return Principal(str(body.get("n")), role, "session", nonce, expires)

    def csrf_token(self, principal: Principal) -> str:
        """The token the page must echo in ``X-CSRF-Token`` for every POST."""
        seed = f"csrf:{principal.via}:{principal.name}:{principal.nonce}"
        return self._sign(seed)

    def check_csrf(self, principal: Principal, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(principal).encode(), token.encode())
