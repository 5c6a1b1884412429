"""Settings: keyword arguments first, ``WSPLUGIN_<NAME>`` environment variables second.

Every setting is declared once, as a field of :class:`Settings` made by :func:`setting`: its
type and default, what it means, how its environment variable is parsed, how a value is
normalised and checked. Everything else is derived from that one declaration: the keyword
arguments of ``install_ws_manager`` (typed, through :func:`settings_keywords`), its
docstring and signature, the environment, and validation. Every value is checked when the
manager is installed, so a bad setting fails at start-up with a message that names it.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from fastapi.params import Depends
from starlette.applications import Starlette

from wsplugin.auth.tokens import TokenAuth
from wsplugin.history import History, normalise_history, parse_history_env
from wsplugin.presence import Presence, normalise_presence, parse_presence_env
from wsplugin.rooms import RoomOptions, normalise_rooms, parse_rooms_env
from wsplugin.types import AuthenticateHook, AuthorizeHook, MessageHook

SlowConsumerPolicy = Literal["close", "drop_oldest"]
ClientPublish = bool | tuple[str, ...]
"""``False`` (only with an ``on_message`` hook), ``True`` (any member), or room globs."""

ENV_PREFIX = "WSPLUGIN_"


# ----------------------------------------------------------------------- parsers and checks
def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_auto_or_bool(raw: str) -> bool | Literal["auto"]:
    return "auto" if raw.strip().lower() == "auto" else _parse_bool(raw)


def _parse_optional_path(raw: str) -> str | None:
    return None if raw.strip().lower() in ("", "none", "off", "false") else raw.strip()


def _parse_rate(raw: str) -> tuple[int, float] | None:
    value = raw.strip().lower()
    if value in ("", "none", "off", "false"):
        return None
    burst, _, rate = value.partition(",")
    return int(burst), float(rate)


def _parse_optional_int(raw: str) -> int | None:
    return None if raw.strip().lower() in ("", "none", "off") else int(raw)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_client_publish(raw: str) -> ClientPublish:
    if raw.strip().lower() in ("", "none"):
        return False
    try:
        return _parse_bool(raw)
    except ValueError:
        return _parse_list(raw)  # comma-separated room patterns


def _normalise_origins(origins: Any) -> Any:
    if origins is None:
        return None
    if isinstance(origins, str):
        origins = [origins]
    if not isinstance(origins, Sequence):
        raise ValueError("allowed_origins must be a list of origins like 'https://example.com'")
    return tuple(str(o).rstrip("/").lower() for o in origins)


def _as_tuple(value: Any) -> Any:
    """A list (or a comma-separated string) of names as a tuple; other values unchanged."""
    if isinstance(value, str):
        return _parse_list(value)
    if isinstance(value, list | tuple):
        return tuple(v.strip() if isinstance(v, str) else v for v in value)
    return value


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_prefix(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and not value.endswith("/")


def _is_optional_path(value: Any) -> bool:
    return value is None or (_is_prefix(value) and value != "/")


def _is_asyncapi_url(value: Any) -> bool:
    return value is None or (isinstance(value, str) and _is_optional_path(
        value.replace("{prefix}", "/ws")))


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


def _is_hook(value: Any) -> bool:
    return value is None or callable(value)


def _is_authenticate(value: Any) -> bool:
    return value is None or callable(value) or isinstance(value, TokenAuth)


def _is_dependency_list(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, Depends) for d in value)


def _is_grace(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _is_rate(rate: Any) -> bool:
    return rate is None or (isinstance(rate, tuple) and len(rate) == 2
                            and _is_positive_int(rate[0]) and _is_positive_number(rate[1]))


def _is_client_publish(value: Any) -> bool:
    return isinstance(value, bool) or (
        isinstance(value, tuple) and all(isinstance(p, str) and p for p in value))


def _is_ip_or_network(entry: Any) -> bool:
    if entry == "*":
        return True
    try:
        if "/" in entry:
            ipaddress.ip_network(entry)
        else:
            ipaddress.ip_address(entry)
    except (TypeError, ValueError):
        return False
    return True


def _is_ip_list(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(e, str) and _is_ip_or_network(e) for e in value)


def _is_non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda value: any(value is c or (type(value) is type(c) and value == c)
                             for c in choices)


# ----------------------------------------------------------------------- the declaration
@dataclass(frozen=True, slots=True)
class Spec:
    """How one setting is read and checked (the metadata of its :class:`Settings` field)."""

    doc: str
    env: Callable[[str], Any] | None = None
    """Parses ``WSPLUGIN_<NAME>``; ``None``: a keyword only (hooks, objects)."""
    check: Callable[[Any], bool] | None = None
    expect: str = ""
    """Completes "<name> must ..., got <value>" when ``check`` fails."""
    normalise: Callable[[Any], Any] | None = None
    fallback_env: str | None = None
    """Another variable read when ``WSPLUGIN_<NAME>`` is not set (uvicorn's, say)."""


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    env: Callable[[str], Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    expect: str = "",
    normalise: Callable[[Any], Any] | None = None,
    fallback_env: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A :class:`Settings` field: everything wsplugin knows about one setting."""
    spec = Spec(doc, env, check, expect, normalise, fallback_env)
    if factory is not None:
        return field(default_factory=factory, metadata={"wsplugin": spec})
    return field(default=default, metadata={"wsplugin": spec})


def _count(default: int, doc: str) -> Any:
    return setting(default, doc=doc, env=int, check=_is_positive_int,
                   expect="must be a positive integer")


def _seconds(default: float, doc: str) -> Any:
    return setting(default, doc=doc, env=float, check=_is_positive_number,
                   expect="must be a positive number of seconds")


def _path(default: str, doc: str) -> Any:
    return setting(default, doc=doc, env=_parse_optional_path, check=_is_optional_path,
                   expect="must be None or a path like '/ws-admin'")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of ``install_ws_manager``, each declared once (see :func:`setting`)."""

    prefix: str = setting(
        "/ws", doc="the managed endpoint is ``{prefix}/{room}``", env=str, check=_is_prefix,
        expect="must start with '/' and not end with '/'")
    backend: str = setting(
        "memory://", doc="``memory://`` (one process) or ``redis://host:port/db``", env=str,
        check=_is_url, expect="must be a URL like 'memory://' or 'redis://host:6379/0'")
    authenticate: AuthenticateHook | TokenAuth | None = setting(
        None, doc="``(websocket) -> identity | None`` or any FastAPI dependency; None "
        "refuses the handshake; or ``JWTAuth(...)``: signed connection tokens",
        check=_is_authenticate, expect="must be callable, a JWTAuth or None")
    dependencies: Sequence[Depends] = setting(
        (), doc="``[Depends(...)]`` run on every managed handshake (as "
        "``APIRouter(dependencies=...)``); one that raises refuses it",
        normalise=_list_to_tuple, check=_is_dependency_list,
        expect="must be a list of Depends(...)")
    auth_timeout: float = _seconds(
        5.0, "seconds a client has after the accept to send its ``connect`` token frame "
        "(``JWTAuth``); then close 4001")
    refresh_grace: float = setting(
        10.0, doc="seconds after a token's ``exp`` before its connection is closed 4001 "
        "``token expired`` without a ``refresh``", env=float, check=_is_grace,
        expect="must be a number of seconds >= 0")
    authorize: AuthorizeHook | None = setting(
        None, doc="``(identity, room) -> bool`` for the URL room and every join",
        check=_is_hook, expect="must be callable or None")
    on_message: MessageHook | None = setting(
        None, doc="``(conn, room, data) -> data``; raise ValueError to reject",
        check=_is_hook, expect="must be callable or None")
    allowed_origins: Sequence[str] | None = setting(
        None, doc="extra origins allowed to open websockets (``['*']``: any)",
        env=_parse_list, normalise=_normalise_origins)
    forwarded_allow_ips: Sequence[str] = setting(
        ("127.0.0.1",), doc="proxies (IPs, CIDR, ``*``) whose forwarded headers the Origin "
        "check believes", env=_parse_list, normalise=_as_tuple, check=_is_ip_list,
        expect="must be a list of IP addresses and networks like "
               "['127.0.0.1', '10.0.0.0/8'] or '*'",
        fallback_env="FORWARDED_ALLOW_IPS")
    client_publish: bool | Sequence[str] = setting(
        False, doc="who may publish: False (only through ``on_message``), True, or room "
        "globs", env=_parse_client_publish, normalise=_as_tuple, check=_is_client_publish,
        expect="must be True, False or a list of room patterns like ['chat-*', 'lobby']")
    max_message_bytes: int = _count(65536, "inbound frame limit (close 1009)")
    max_queue_messages: int = _count(
        1000, "outbound queue bound per connection, in messages")
    max_queue_bytes: int = _count(
        4 * 2**20, "outbound queue bound per connection, in bytes")
    slow_consumer: SlowConsumerPolicy = setting(
        "close", doc="on overflow: ``close`` (4008) or ``drop_oldest``", env=str,
        check=_one_of("close", "drop_oldest"), expect="must be 'close' or 'drop_oldest'")
    max_rooms_per_connection: int = _count(100, "rooms one connection may be in")
    max_user_info_bytes: int = _count(
        1024, "largest ``User.info`` (JSON bytes); more refuses the handshake")
    max_connections_per_user: int | None = setting(
        None, doc="connections one user may have (cluster-wide); beyond: 403 ``user_limit``",
        env=_parse_optional_int, check=lambda value: value is None or _is_positive_int(value),
        expect="must be None or a positive integer")
    rate_limit: tuple[int, float] | None = setting(
        (100, 50.0), doc="inbound (burst, messages/s) per connection; beyond: 4029",
        env=_parse_rate, normalise=_list_to_tuple, check=_is_rate,
        expect="must be None or (burst, messages_per_second)")
    heartbeat_interval: float = _seconds(20.0, "seconds between checks for stalled writers")
    heartbeat_timeout: float = _seconds(20.0, "seconds without writer progress before close 4008")
    echo_to_sender: bool = setting(
        True, doc="a publisher receives its own message", env=_parse_bool)
    coalesce: bool = setting(
        False, doc="batch queued frames for every connection", env=_parse_bool)
    admin_path: str | None = _path("/ws-admin", "the dashboard's path; None turns it off")
    admin_auth: Any = setting(
        None, doc="who may open the dashboard (token, pair, AdminAuth, dependency, False)")
    health_path: str | None = _path(
        "/ws-health", "``GET``: 200 ok / 503 degraded; None turns it off")
    redis_prefix: str = setting(
        "wsplugin", doc="prefix of Redis keys and channels", env=str,
        check=_is_non_empty_str, expect="must be a non-empty string")
    registry_ttl: float = _seconds(15.0, "seconds before a dead node's registry entries expire")
    fast_path: bool | Literal["auto"] = setting(
        "auto", doc="``False``: every frame through the ASGI ``send``", env=_parse_auto_or_bool,
        check=_one_of("auto", True, False), expect="must be 'auto', True or False")
    history: Mapping[str, History] = setting(
        doc="room glob -> ``History(size, ttl)`` (the variable holds JSON)", factory=dict,
        env=parse_history_env, normalise=normalise_history)
    recovery_max_messages: int = _count(300, "most messages one recovery may replay")
    presence: Mapping[str, Presence] = setting(
        doc="room glob -> ``Presence(join_leave, grace, max_list)``: who is online (the "
        "variable holds patterns, comma-separated, or JSON)", factory=dict,
        env=parse_presence_env, normalise=normalise_presence)
    presence_interval: float = _seconds(
        0.2, "seconds presence changes of a room are collected into one ``presence_diff``")
    max_concurrent_recoveries: int = _count(
        16, "history recoveries one node runs at a time; others wait ``recovery_wait``")
    recovery_wait: float = _seconds(
        5.0, "seconds a recovery waits for a free slot before ``recovered: false``")
    gc_tuning: bool = setting(
        True, doc="when the manager starts: freeze the start-up heap out of the collector's "
        "scans and, if the app kept Python's thresholds, raise the first to 50,000",
        env=_parse_bool)
    compression: bool | Literal["auto"] = setting(
        "auto", doc="shared permessage-deflate where negotiated; ``False``: plain frames",
        env=_parse_auto_or_bool, check=_one_of("auto", True, False),
        expect="must be 'auto', True or False")
    rooms: Mapping[str, RoomOptions] = setting(
        doc="room glob -> ``RoomOptions(...)``: what applies to matching rooms, the first "
        "matching pattern in order (the variable holds JSON)", factory=dict,
        env=parse_rooms_env, normalise=normalise_rooms)
    asyncapi_url: str | None = setting(
        "{prefix}-asyncapi.json", doc="the AsyncAPI document of the endpoint (the page: "
        "``{prefix}-docs``); ``{prefix}`` stands for the prefix; None turns both off",
        env=_parse_optional_path, check=_is_asyncapi_url,
        expect="must be None or a path like '{prefix}-asyncapi.json' or '/asyncapi.json'")
    metrics_path: str | None = setting(
        None, doc="Prometheus metrics (``wsplugin[metrics]``) at this path; None: off",
        env=_parse_optional_path, check=_is_optional_path,
        expect="must be None or a path like '/ws-metrics'")
    metrics_token: str | None = setting(
        None, doc="if set, ``/metrics`` needs ``Authorization: Bearer <token>``", env=str,
        check=lambda value: value is None or _is_non_empty_str(value),
        expect="must be None or a non-empty string")


def spec_of(name: str) -> Spec:
    spec: Spec = Settings.__dataclass_fields__[name].metadata["wsplugin"]
    return spec


NAMES: tuple[str, ...] = tuple(f.name for f in fields(Settings))


# ----------------------------------------------------------------------- reading
class _Unset:
    pass


_UNSET: Any = _Unset()


def _from_env(name: str, env: Mapping[str, str]) -> Any:
    spec = spec_of(name)
    if spec.env is None:
        return _UNSET
    variable = ENV_PREFIX + name.upper()
    raw = env.get(variable)
    if raw is None and spec.fallback_env is not None:
        variable, raw = spec.fallback_env, env.get(spec.fallback_env) or None
    if raw is None:
        return _UNSET
    try:
        return spec.env(raw)
    except ValueError as exc:
        raise ValueError(f"{variable}={raw!r} is invalid: {exc}") from exc


def build_settings(
    options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Settings:
    """Merge keyword arguments, the environment and defaults; validate every value."""
    env = os.environ if env is None else env
    unknown = set(options) - set(NAMES)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(f"install_ws_manager() got unknown keyword(s): {names}")
    values: dict[str, Any] = {}
    for name in NAMES:
        value = options[name] if name in options else _from_env(name, env)
        if value is _UNSET:
            continue
        normalise = spec_of(name).normalise
        values[name] = value if normalise is None else normalise(value)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Raise ``ValueError`` naming the first bad setting."""
    for name in NAMES:
        spec = spec_of(name)
        value = getattr(settings, name)
        if spec.check is not None and not spec.check(value):
            raise ValueError(f"wsplugin: {name} {spec.expect}, got {value!r}")


# ----------------------------------------------------------------------- the keywords
P = ParamSpec("P")
R = TypeVar("R")


def _describe(name: str) -> str:
    spec = spec_of(name)
    default = Settings.__dataclass_fields__[name].default
    shown = "{}" if default is MISSING else repr(default)
    variable = f"; env ``{ENV_PREFIX}{name.upper()}``" if spec.env is not None else ""
    return f"    ``{name}={shown}``: {spec.doc}{variable}."


def _default(f: Field[Any]) -> Any:
    factory = f.default_factory
    return factory() if f.default is MISSING and callable(factory) else f.default


def _document(func: Callable[..., Any]) -> None:
    """List the settings in ``inspect.signature(func)``, ``help(func)`` and its docstring."""
    signature = inspect.signature(func)
    first = next(iter(signature.parameters.values()))
    keywords = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f),
                                  annotation=f.type) for f in fields(Settings)]
    func.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first, *keywords])
    lines = "\n".join(_describe(name) for name in NAMES)
    func.__doc__ = f"{func.__doc__ or ''}\n    Settings:\n\n{lines}\n"


def _keywords_of(
    cls: Callable[P, Any],
) -> Callable[[Callable[..., R]], Callable[Concatenate[Starlette, P], R]]:
    def decorate(func: Callable[..., R]) -> Callable[Concatenate[Starlette, P], R]:
        _document(func)
        return func

    return decorate


settings_keywords = _keywords_of(Settings)
"""Decorates ``install_ws_manager(app, **options)``: its keywords are the fields of
:class:`Settings`, typed for mypy and IDEs, in its signature and its docstring."""
