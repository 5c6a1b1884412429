"""Settings: keyword arguments, WSPLUGIN_<NAME> environment variables, validation."""

from __future__ import annotations

from typing import Any

import pytest

from wsplugin.config import Settings, build_settings


def test_defaults_match_the_contract() -> None:
    s = build_settings({}, env={})
    assert s == Settings()
    assert (s.prefix, s.backend, s.max_message_bytes) == ("/ws", "memory://", 65536)
    assert (s.max_queue_messages, s.max_queue_bytes) == (1000, 4 * 2**20)
    assert (s.slow_consumer, s.max_rooms_per_connection) == ("close", 100)
    assert s.rate_limit == (100, 50.0)
    assert (s.heartbeat_interval, s.heartbeat_timeout, s.echo_to_sender) == (20.0, 20.0, True)
    assert s.allowed_origins is None


def test_environment_is_read() -> None:
    env = {
        "WSPLUGIN_PREFIX": "/rt",
        "WSPLUGIN_BACKEND": "memory://x",
        "WSPLUGIN_MAX_QUEUE_MESSAGES": "7",
        "WSPLUGIN_MAX_MESSAGE_BYTES": "1024",
        "WSPLUGIN_SLOW_CONSUMER": "drop_oldest",
        "WSPLUGIN_RATE_LIMIT": "5,1.5",
        "WSPLUGIN_HEARTBEAT_INTERVAL": "0.5",
        "WSPLUGIN_ECHO_TO_SENDER": "false",
        "WSPLUGIN_ALLOWED_ORIGINS": "https://a.example, https://B.example/",
        "WSPLUGIN_ADMIN_PATH": "off",
        "WSPLUGIN_REDIS_PREFIX": "app1",
    }
    s = build_settings({}, env=env)
    assert s.prefix == "/rt"
    assert s.backend == "memory://x"
    assert s.max_queue_messages == 7
    assert s.max_message_bytes == 1024
    assert s.slow_consumer == "drop_oldest"
    assert s.rate_limit == (5, 1.5)
    assert s.heartbeat_interval == 0.5
    assert s.echo_to_sender is False
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert s.admin_path is None
    assert s.redis_prefix == "app1"


@pytest.mark.parametrize("raw", ["off", "none", ""])
def test_rate_limit_can_be_turned_off_by_env(raw: str) -> None:
    assert build_settings({}, env={"WSPLUGIN_RATE_LIMIT": raw}).rate_limit is None


def test_keyword_wins_over_environment() -> None:
    s = build_settings({"max_queue_messages": 3}, env={"WSPLUGIN_MAX_QUEUE_MESSAGES": "9"})
    assert s.max_queue_messages == 3


def test_rate_limit_list_becomes_a_tuple() -> None:
    assert build_settings({"rate_limit": [5, 1.0]}, env={}).rate_limit == (5, 1.0)


def test_allowed_origins_are_normalised() -> None:
    s = build_settings({"allowed_origins": ["https://App.Example/"]}, env={})
    assert s.allowed_origins == ("https://app.example",)
    assert build_settings({"allowed_origins": "*"}, env={}).allowed_origins == ("*",)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_queue_msgs"):
        build_settings({"max_queue_msgs": 1}, env={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("prefix", "ws"),
        ("prefix", "/ws/"),
        ("backend", "memory"),
        ("max_message_bytes", 0),
        ("max_queue_messages", -1),
        ("max_queue_messages", 1.5),
        ("max_queue_messages", True),
        ("max_queue_bytes", "big"),
        ("max_rooms_per_connection", 0),
        ("slow_consumer", "block"),
        ("rate_limit", (0, 1.0)),
        ("rate_limit", (5, 0)),
        ("rate_limit", 5),
        ("heartbeat_interval", 0),
        ("heartbeat_timeout", -1.0),
        ("authenticate", "not callable"),
        ("on_message", 3),
        ("admin_path", "admin"),
        ("health_path", "/"),
        ("redis_prefix", ""),
    ],
)
def test_bad_setting_names_itself(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        build_settings({name: value}, env={})


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("WSPLUGIN_MAX_QUEUE_MESSAGES", "lots"),
        ("WSPLUGIN_ECHO_TO_SENDER", "maybe"),
        ("WSPLUGIN_RATE_LIMIT", "fast"),
        ("WSPLUGIN_HEARTBEAT_TIMEOUT", "soon"),
    ],
)
def test_bad_environment_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var):
        build_settings({}, env={var: raw})


def test_bad_environment_value_is_validated_like_a_keyword() -> None:
    with pytest.raises(ValueError, match="max_queue_messages"):
        build_settings({}, env={"WSPLUGIN_MAX_QUEUE_MESSAGES": "0"})


def test_client_publish_is_off_by_default() -> None:
    assert build_settings({}, env={}).client_publish is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("off", False), ("", False), ("none", False),
     ("chat-*, lobby", ("chat-*", "lobby")), ("lobby", ("lobby",))],
)
def test_client_publish_from_the_environment(raw: str, expected: Any) -> None:
    s = build_settings({}, env={"WSPLUGIN_CLIENT_PUBLISH": raw})
    assert s.client_publish == expected


def test_client_publish_keyword_list_becomes_a_tuple() -> None:
    assert build_settings({"client_publish": ["chat-*"]}, env={}).client_publish == ("chat-*",)
    assert build_settings({"client_publish": True},
                          env={"WSPLUGIN_CLIENT_PUBLISH": "false"}).client_publish is True


@pytest.mark.parametrize("value", [3, ["chat-*", ""], [1], None])
def test_bad_client_publish_names_itself(value: Any) -> None:
    with pytest.raises(ValueError, match="client_publish"):
        build_settings({"client_publish": value}, env={})


def test_forwarded_allow_ips_default_is_localhost_or_uvicorns_variable() -> None:
    assert build_settings({}, env={}).forwarded_allow_ips == ("127.0.0.1",)
    uvicorn_env = {"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.168.0.1"}
    assert build_settings({}, env=uvicorn_env).forwarded_allow_ips == ("10.0.0.0/8",
                                                                        "192.168.0.1")
    ours = {**uvicorn_env, "WSPLUGIN_FORWARDED_ALLOW_IPS": "*"}
    assert build_settings({}, env=ours).forwarded_allow_ips == ("*",)
    keyword = build_settings({"forwarded_allow_ips": "::1,127.0.0.1"}, env=ours)
    assert keyword.forwarded_allow_ips == ("::1", "127.0.0.1")


@pytest.mark.parametrize("value", [["proxy.internal"], ["10.0.0.1/8"], "300.0.0.1", [1]])
def test_bad_forwarded_allow_ips_names_itself(value: Any) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        build_settings({"forwarded_allow_ips": value}, env={})


def test_install_ws_manager_takes_exactly_the_declared_settings() -> None:
    """One declaration: the keywords, their defaults and the docstring come from Settings."""
    import dataclasses
    import inspect

    from wsplugin import install_ws_manager

    params = inspect.signature(install_ws_manager).parameters
    declared = {f.name: f for f in dataclasses.fields(Settings)}
    assert list(params)[1:] == list(declared)
    defaults = Settings()
    for name, param in list(params.items())[1:]:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY
        assert param.default == getattr(defaults, name)
        assert f"``{name}=" in (install_ws_manager.__doc__ or "")


def test_every_setting_is_documented_in_the_configuration_page() -> None:
    import dataclasses
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    missing = [f.name for f in dataclasses.fields(Settings) if f"`{f.name}`" not in page]
    assert missing == []


def test_an_unknown_keyword_of_install_is_a_type_error() -> None:
    from fastapi import FastAPI

    from wsplugin import install_ws_manager

    with pytest.raises(TypeError, match="max_queue_msgs"):
        install_ws_manager(FastAPI(), max_queue_msgs=1)  # type: ignore[call-arg]


def test_token_settings_defaults_environment_and_checks() -> None:
    s = build_settings({}, env={})
    assert (s.auth_timeout, s.refresh_grace, s.dependencies) == (5.0, 10.0, ())
    s = build_settings({}, env={"WSPLUGIN_AUTH_TIMEOUT": "2.5", "WSPLUGIN_REFRESH_GRACE": "0"})
    assert (s.auth_timeout, s.refresh_grace) == (2.5, 0.0)
    with pytest.raises(ValueError, match="refresh_grace"):
        build_settings({"refresh_grace": -1}, env={})
    with pytest.raises(ValueError, match="auth_timeout"):
        build_settings({"auth_timeout": 0}, env={})
    with pytest.raises(ValueError, match="authenticate must be callable, a JWTAuth or None"):
        build_settings({"authenticate": "secret"}, env={})
