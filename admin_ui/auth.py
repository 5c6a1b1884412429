"""Who may open the dashboard: credentials, roles, and how ``admin_auth=`` is understood.

Two roles: a *viewer* sees everything; an *operator* also acts (broadcast, send, kick).
A plain token or ``(username, password)`` pair is an operator. ``AdminAuth`` lists
operators and viewers separately. A FastAPI dependency decides by itself: it returns the
operator (anything; ``role``/``name`` are read from an attribute or a mapping key) or raises.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from admin_ui.shared_token import SharedToken, shared_token

logger = logging.getLogger("wsplugin.admin")

Role = Literal["viewer", "operator"]
Credential: TypeAlias = str | tuple[str, str]
"""A bearer token, or a ``(username, password)`` pair."""

TOKEN_ENV = "WSPLUGIN_ADMIN_TOKEN"
VIEWER_TOKEN_ENV = "WSPLUGIN_ADMIN_VIEWER_TOKEN"
SECRET_ENV = "WSPLUGIN_ADMIN_SECRET"


@dataclass(frozen=True, slots=True)
class Principal:
    """The person (or script) behind a request."""

    name: str
    role: Role
    via: str  # "session", "bearer", "basic", "dependency" or "open"
    nonce: str = ""  # the session's nonce: the CSRF token is derived from it
    expires: float = 0.0  # a session's end (unix time); 0 for other kinds

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class AdminAuth:
    """Explicit credentials with roles, or a dependency, or ``disabled=True``.

    ``secret`` signs session cookies; by default it is derived from the credentials (so
    every worker of a multi-process server agrees), or ``WSPLUGIN_ADMIN_SECRET``.
    """

    operators: Sequence[Credential] = ()
    viewers: Sequence[Credential] = ()
    dependency: Callable[..., Any] | None = None
    disabled: bool = False
    secret: str | None = None

    def __post_init__(self) -> None:
        for credential in (*self.operators, *self.viewers):
            _check_credential(credential)
        if not (self.operators or self.viewers or self.dependency or self.disabled):
            raise ValueError("AdminAuth needs operators, viewers, a dependency or disabled=True")

    @property
    def uses_credentials(self) -> bool:
        return self.dependency is None and not self.disabled


AdminAuthOption: TypeAlias = AdminAuth | Credential | Callable[..., Any] | bool | None
"""What ``admin_auth=`` accepts (see ``resolve_auth``)."""


def _check_credential(credential: object) -> None:
    if isinstance(credential, str) and credential:
        return
    if (
        isinstance(credential, tuple)
        and len(credential) == 2
        and all(isinstance(part, str) and part for part in credential)
    ):
        return
    raise ValueError("a credential is a non-empty token or a (username, password) pair")


def resolve_auth(option: AdminAuthOption, login_url: str) -> tuple[AdminAuth, str | None]:
    """Turn ``admin_auth=`` into an ``AdminAuth``; also returns a generated token, if any."""
    if isinstance(option, AdminAuth):
        return option, None
    if option is False:
        logger.warning("wsplugin admin: authentication is DISABLED (admin_auth=False)")
        return AdminAuth(disabled=True), None
    if isinstance(option, str | tuple):
        return AdminAuth(operators=(option,)), None
    if callable(option):
        return AdminAuth(dependency=option), None
    return _from_environment(login_url)


def _from_environment(login_url: str) -> tuple[AdminAuth, str | None]:
    token = os.environ.get(TOKEN_ENV, "")
    viewer = os.environ.get(VIEWER_TOKEN_ENV, "")
    viewers = (viewer,) if viewer else ()
    if token:
        return AdminAuth(operators=(token,), viewers=viewers), None
    shared = shared_token()
    _announce(shared, login_url)
    return AdminAuth(operators=(shared.token,), viewers=viewers), shared.token


def _announce(shared: SharedToken, login_url: str) -> None:
    """The login link, in a fragment (never sent to a server, so in no access log)."""
    if not shared.first:
        logger.info(
            "wsplugin admin: using the generated admin token shared by the workers of pid %s "
            "(another worker logged the login link)",
            shared.manager_pid,
        )
        return
    scope = "every worker of this server start shares it" if shared.manager_pid else (
        "valid in this process only: set it for several processes"
    )
    logger.warning(
        "wsplugin admin: no admin_auth configured; open http://<host>%s#token=%s "
        "(set %s to choose the token; %s)",
        login_url,
        shared.token,
        TOKEN_ENV,
        scope,
    )


def token_name(token: str) -> str:
    """A stable, non-secret name for a token holder (for the audit log)."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def check_token(auth: AdminAuth, token: str) -> Principal | None:
    for role, credentials in _by_role(auth):
        for credential in credentials:
            if isinstance(credential, str) and _equal(credential, token):
                return Principal(token_name(token), role, "bearer")
    return None


def check_password(auth: AdminAuth, username: str, password: str) -> Principal | None:
    for role, credentials in _by_role(auth):
        for credential in credentials:
            if isinstance(credential, tuple) and _pair_equal(credential, username, password):
                return Principal(username, role, "basic")
    return None


def credentials(auth: AdminAuth) -> list[tuple[Role, Credential]]:
    """Every configured credential with its role."""
    return [(role, credential) for role, listed in _by_role(auth) for credential in listed]


def _by_role(auth: AdminAuth) -> tuple[tuple[Role, Sequence[Credential]], ...]:
    return (("operator", auth.operators), ("viewer", auth.viewers))


def _pair_equal(credential: tuple[str, str], username: str, password: str) -> bool:
    same_user = _equal(credential[0], username)
    same_password = _equal(credential[1], password)
    return same_user and same_password


def _equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def principal_from_user(user: Any) -> Principal:
    """What a user's dependency returned, as a Principal (operator unless it says viewer)."""
    role = _read(user, "role")
    name = _read(user, "name") or _read(user, "username") or str(user)
    return Principal(str(name), "viewer" if role == "viewer" else "operator", "dependency")


def _read(user: Any, key: str) -> Any:
    if isinstance(user, Mapping):
        return user.get(key)
    return getattr(user, key, None)


def signing_key(auth: AdminAuth) -> bytes:
    """The key that signs sessions and CSRF tokens."""
    configured = auth.secret or os.environ.get(SECRET_ENV, "")
    if configured:
        return hashlib.sha256(b"wsplugin-admin:" + configured.encode()).digest()
    if auth.uses_credentials:
        material = repr((list(auth.operators), list(auth.viewers))).encode()
        return hashlib.sha256(b"wsplugin-admin-credentials:" + material).digest()
    return secrets.token_bytes(32)
