"""``JWTAuth``: connections authenticated by JSON Web Tokens (optional extra ``wsplugin[jwt]``).

PyJWT is imported when a ``JWTAuth`` is made, never by ``import wsplugin``. The key is
checked against every allowed algorithm at that moment: an RSA public key given for
``HS256`` (the algorithm-confusion attack) or an HMAC secret given for ``RS256`` is a
``ValueError`` at start-up, and ``none`` is never an algorithm.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wsplugin.auth.jwks import KeySet
from wsplugin.auth.tokens import (
    BAD_AUDIENCE,
    BAD_ISSUER,
    BAD_SIGNATURE,
    BAD_TOKEN,
    MISSING_SUB,
    TOKEN_EXPIRED,
    TokenAuth,
    TokenError,
)

if TYPE_CHECKING:
    from jwt import PyJWK

logger = logging.getLogger("wsplugin")

EXTRA_HINT = "JWTAuth needs PyJWT with its crypto extra: pip install 'wsplugin[jwt]'"


def _pyjwt() -> None:
    """Import PyJWT (and cryptography), or an ImportError that names the extra."""
    try:
        import cryptography  # noqa: F401
        import jwt  # noqa: F401
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc


class JWTAuth(TokenAuth):
    """``install_ws_manager(app, authenticate=JWTAuth(key=..., algorithms=["RS256"]))``.

    ``key``: the verification key (a PEM public key, a ``cryptography`` key object, or an
    HMAC secret for ``HS*``), or ``jwks_url``: a JSON Web Key Set, fetched in a thread,
    cached for ``jwks_lifespan`` seconds and fetched again for an unknown ``kid`` (at most
    every ``jwks_min_refresh`` seconds). ``algorithms`` is required. ``audience`` and
    ``issuer``, when given, must match the token's ``aud`` and ``iss``; ``leeway`` is the
    clock skew allowed on ``exp``, ``nbf`` and ``iat``, in seconds.
    """

    def __init__(
        self,
        *,
        key: Any = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 0,
        jwks_lifespan: float = 300.0,
        jwks_min_refresh: float = 10.0,
        jwks_timeout: float = 10.0,
    ) -> None:
        _pyjwt()
        self.algorithms = _checked_algorithms(algorithms)
        if (key is None) == (jwks_url is None):
            raise ValueError("JWTAuth needs exactly one of key=... and jwks_url=...")
        self.audience = audience
        self.issuer = issuer
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise ValueError(f"JWTAuth: leeway must be a number of seconds >= 0, got {leeway!r}")
        self.leeway = leeway
        self._key = None if key is None else _prepared_key(key, self.algorithms)
        self._key_set = None if jwks_url is None else KeySet(
            jwks_url, lifespan=jwks_lifespan, min_refresh=jwks_min_refresh,
            timeout=jwks_timeout)

    def __repr__(self) -> str:  # never the key: settings may be printed
        source = "key=<hidden>" if self._key_set is None else f"jwks_url={self._key_set.url!r}"
        return f"JWTAuth({source}, algorithms={list(self.algorithms)!r})"

    async def claims(self, token: str) -> Mapping[str, Any]:
        import jwt

        key: Any
        if self._key_set is None:
            key, algorithms = self._key, self.algorithms
        else:
            key, algorithms = await self._signing_key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(algorithms), audience=self.audience,
                issuer=self.issuer, leeway=self.leeway)
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        except (ValueError, TypeError) as exc:  # a malformed token PyJWT did not classify
            logger.debug("wsplugin: token not decoded: %s", type(exc).__name__)
            raise TokenError(BAD_TOKEN) from None
        return claims

    async def _signing_key(self, token: str) -> tuple[Any, tuple[str, ...]]:
        """The key set's key for ``token`` and the allowed algorithms that fit it."""
        import jwt

        assert self._key_set is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise TokenError(BAD_TOKEN) from None
        if kid is not None and not isinstance(kid, str):
            raise TokenError(BAD_TOKEN)
        found = await self._key_set.key(kid)
        if found is None:
            raise TokenError(BAD_SIGNATURE)  # no key to verify it with
        algorithms = _fitting(found, self.algorithms)
        if not algorithms:
            raise TokenError(BAD_SIGNATURE)
        return found.key, algorithms


def _checked_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    from jwt.algorithms import get_default_algorithms

    known = get_default_algorithms()
    if isinstance(algorithms, str) or not isinstance(algorithms, Sequence) or not algorithms:
        raise ValueError("JWTAuth: algorithms must be a non-empty list, like ['RS256']")
    for name in algorithms:
        if not isinstance(name, str) or name.lower() == "none":
            raise ValueError(f"JWTAuth: {name!r} is not an algorithm a token may use")
        if name not in known:
            raise ValueError(f"JWTAuth: unknown algorithm {name!r} (known: "
                             f"{', '.join(sorted(a for a in known if a != 'none'))})")
    return tuple(algorithms)


def _prepared_key(key: Any, algorithms: tuple[str, ...]) -> Any:
    """The key in the form PyJWT verifies with; ``ValueError`` unless it fits every
    algorithm (so no token can pick an algorithm that reads the key another way)."""
    from jwt.algorithms import get_default_algorithms

    known = get_default_algorithms()
    prepared: Any = None
    for name in algorithms:
        try:
            prepared = known[name].prepare_key(key)
        except Exception as exc:  # InvalidKeyError, ValueError, TypeError...
            raise ValueError(f"JWTAuth: the key does not fit algorithm {name} "
                             f"({type(exc).__name__}); give one key type per JWTAuth, "
                             "e.g. an RSA public key with RS256") from None
    public_key = getattr(prepared, "public_key", None)  # a private key: verify with its half
    return public_key() if callable(public_key) else prepared


def _fitting(jwk: PyJWK, algorithms: tuple[str, ...]) -> tuple[str, ...]:
    """The allowed algorithms that verify with ``jwk``'s kind of key."""
    from jwt.algorithms import get_default_algorithms

    known = get_default_algorithms()
    kind = type(jwk.Algorithm)
    return tuple(name for name in algorithms if type(known[name]) is kind)


def _reason(exc: Exception) -> str:
    """The reason word of a PyJWT error (never its message, never the token)."""
    import jwt

    if isinstance(exc, jwt.ExpiredSignatureError):
        return TOKEN_EXPIRED
    if isinstance(exc, jwt.InvalidAudienceError):
        return BAD_AUDIENCE
    if isinstance(exc, jwt.InvalidIssuerError):
        return BAD_ISSUER
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return {"aud": BAD_AUDIENCE, "iss": BAD_ISSUER, "sub": MISSING_SUB}.get(
            exc.claim, BAD_TOKEN)
    if isinstance(exc, jwt.InvalidSignatureError | jwt.InvalidAlgorithmError
                  | jwt.InvalidKeyError):
        return BAD_SIGNATURE
    return BAD_TOKEN
