"""Settings: keyword arguments first, ``WSPLUGIN_<NAME>`` environment variables second.

Every value is checked when the manager is installed, so a bad setting fails at start-up
with a message that names it, never at the first connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from wsplugin.types import AuthenticateHook, AuthorizeHook, MessageHook

SlowConsumerPolicy = Literal["close", "drop_oldest"]

_UNSET: Any = object()
ENV_PREFIX = "WSPLUGIN_"


@dataclass(frozen=True)
class Settings:
    prefix: str = "/ws"
    backend: str = "memory://"
    authenticate: AuthenticateHook | None = None
    authorize: AuthorizeHook | None = None
    on_message: MessageHook | None = None
    allowed_origins: tuple[str, ...] | None = None
    max_message_bytes: int = 65536
    max_queue_messages: int = 1000
    max_queue_bytes: int = 4 * 2**20
    slow_consumer: SlowConsumerPolicy = "close"
    max_rooms_per_connection: int = 100
    rate_limit: tuple[int, float] | None = (100, 50.0)
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 20.0
    echo_to_sender: bool = True
    coalesce: bool = False
    admin_path: str | None = "/ws-admin"
    admin_auth: Any = None
    health_path: str | None = "/ws-health"
    redis_prefix: str = "wsplugin"
    registry_ttl: float = 15.0
    fast_path: bool | Literal["auto"] = "auto"
    compression: bool | Literal["auto"] = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected true or false")


def _parse_fast_path(raw: str) -> bool | Literal["auto"]:
    return "auto" if raw.strip().lower() == "auto" else _parse_bool("fast_path", raw)


def _parse_compression(raw: str) -> bool | Literal["auto"]:
    return "auto" if raw.strip().lower() == "auto" else _parse_bool("compression", raw)


def _parse_optional_path(raw: str) -> str | None:
    return None if raw.strip().lower() in ("", "none", "off", "false") else raw.strip()


def _parse_rate(raw: str) -> tuple[int, float] | None:
    value = raw.strip().lower()
    if value in ("", "none", "off", "false"):
        return None
    burst, _, rate = value.partition(",")
    return int(burst), float(rate)


def _parse_origins(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_ENV_PARSERS: dict[str, Any] = {
    "prefix": str,
    "backend": str,
    "allowed_origins": _parse_origins,
    "max_message_bytes": int,
    "max_queue_messages": int,
    "max_queue_bytes": int,
    "slow_consumer": str,
    "max_rooms_per_connection": int,
    "rate_limit": _parse_rate,
    "heartbeat_interval": float,
    "heartbeat_timeout": float,
    "echo_to_sender": None,  # bool, see _from_env
    "coalesce": None,
    "admin_path": _parse_optional_path,
    "health_path": _parse_optional_path,
    "redis_prefix": str,
    "registry_ttl": float,
    "fast_path": _parse_fast_path,
    "compression": _parse_compression,
}


def _from_env(name: str, env: Mapping[str, str]) -> Any:
    raw = env.get(ENV_PREFIX + name.upper())
    if raw is None or name not in _ENV_PARSERS:
        return _UNSET
    parser = _ENV_PARSERS[name]
    try:
        return _parse_bool(name, raw) if parser is None else parser(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is invalid: {exc}") from exc


def build_settings(
    options: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Settings:
    """Merge keyword arguments (``_UNSET`` where not given), the environment and defaults."""
    env = os.environ if env is None else env
    known = {f.name for f in fields(Settings)} - {"extra"}
    unknown = set(options) - known
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(f"install_ws_manager() got unknown keyword(s): {names}")
    values: dict[str, Any] = {}
    for name in known:
        value = options.get(name, _UNSET)
        if value is _UNSET:
            value = _from_env(name, env)
        if value is not _UNSET:
            values[name] = value
    if values.get("allowed_origins") is not None:
        values["allowed_origins"] = _normalise_origins(values["allowed_origins"])
    if isinstance(values.get("rate_limit"), list):
        values["rate_limit"] = tuple(values["rate_limit"])
    settings = Settings(**values)
    validate(settings)
    return settings


def _normalise_origins(origins: Any) -> tuple[str, ...]:
    if isinstance(origins, str):
        origins = [origins]
    if not isinstance(origins, Sequence):
        raise ValueError("allowed_origins must be a list of origins like 'https://example.com'")
    return tuple(str(o).rstrip("/").lower() for o in origins)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"wsplugin: {message}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def validate(s: Settings) -> None:
    """Raise ``ValueError`` naming the first bad setting."""
    _require(
        isinstance(s.prefix, str) and s.prefix.startswith("/") and not s.prefix.endswith("/"),
        f"prefix must start with '/' and not end with '/', got {s.prefix!r}",
    )
    _require(isinstance(s.backend, str) and "://" in s.backend,
             f"backend must be a URL like 'memory://' or 'redis://host:6379/0', got {s.backend!r}")
    for hook in ("authenticate", "authorize", "on_message"):
        value = getattr(s, hook)
        _require(value is None or callable(value), f"{hook} must be callable or None")
    for name in ("max_message_bytes", "max_queue_messages", "max_queue_bytes",
                 "max_rooms_per_connection"):
        _require(_is_positive_int(getattr(s, name)),
                 f"{name} must be a positive integer, got {getattr(s, name)!r}")
    _require(s.slow_consumer in ("close", "drop_oldest"),
             f"slow_consumer must be 'close' or 'drop_oldest', got {s.slow_consumer!r}")
    _validate_rate(s.rate_limit)
    for name in ("heartbeat_interval", "heartbeat_timeout", "registry_ttl"):
        _require(_is_positive_number(getattr(s, name)),
                 f"{name} must be a positive number of seconds, got {getattr(s, name)!r}")
    for name in ("admin_path", "health_path"):
        value = getattr(s, name)
        _require(value is None or (isinstance(value, str) and value.startswith("/")
                                   and value != "/" and not value.endswith("/")),
                 f"{name} must be None or a path like '/ws-admin', got {value!r}")
    _require(isinstance(s.redis_prefix, str) and bool(s.redis_prefix),
             "redis_prefix must be a non-empty string")
    _require(s.fast_path == "auto" or isinstance(s.fast_path, bool),
             f"fast_path must be 'auto', True or False, got {s.fast_path!r}")
    _require(s.compression == "auto" or isinstance(s.compression, bool),
             f"compression must be 'auto', True or False, got {s.compression!r}")


def _validate_rate(rate: Any) -> None:
    if rate is None:
        return
    ok = (isinstance(rate, tuple) and len(rate) == 2 and _is_positive_int(rate[0])
          and _is_positive_number(rate[1]))
    _require(ok, f"rate_limit must be None or (burst, messages_per_second), got {rate!r}")
